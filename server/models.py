"""Every model, imported once so that each metadata is complete (for Alembic and tests)."""

from server.accounts.models import Account, AccountPayment, Statement
from server.campaigns.models import BirthdayDay, Campaign, CampaignMessage
from server.cards.models import Card, CardFlag
from server.customers.models import Customer, SurveyResponse
from server.devices.models import Device
from server.loyalty.models import (
                                   ImportedCustomer,
                                   PointsEntry,
                                   ProgrammeVersion,
                                   Purchase,
                                   PurchaseLine,
                                   Redemption,
                                   Refund,
                                   RefundLine,
)
from server.privacy.models import AuditEntry, Consent
from server.reports.models import (
    AnonymousSales,
    CategoryDay,
    CustomerDay,
    SalesDay,
    SalesDayState,
    SalesMonth,
    VisitDay,
    VisitMonth,
)
from server.segments.models import Segment
from server.staff.models import AuthFailure, Staff
from server.stores.models import Store
from server.taps.models import Visit
from server.tickets.models import Product, Ticket, TicketNote
from server.value.models import ValueScore, ValueSnapshot
from server.vault.models import VaultRecord

__all__ = ["Account", "AccountPayment", "AnonymousSales", "AuditEntry", "AuthFailure",
           "CategoryDay", "CustomerDay", "SalesMonth", "VisitDay", "VisitMonth",
           "BirthdayDay", "Campaign", "CampaignMessage", "Card", "CardFlag", "Consent", "Customer",
           "Device", "ImportedCustomer", "PointsEntry", "Product", "ProgrammeVersion", "Purchase",
           "PurchaseLine", "Redemption", "Refund", "RefundLine", "SalesDay", "SalesDayState",
           "Segment", "Staff", "Statement",
           "Store", "SurveyResponse", "Ticket", "TicketNote", "ValueScore", "ValueSnapshot",
           "VaultRecord", "Visit"]

"""Every model, imported once so that each metadata is complete (for Alembic and tests)."""

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
from server.reports.models import AnonymousSales
from server.staff.models import AuthFailure, Staff
from server.stores.models import Store
from server.taps.models import Visit
from server.tickets.models import Product, Ticket, TicketNote
from server.vault.models import VaultRecord

__all__ = ["AnonymousSales", "AuditEntry", "AuthFailure", "Card", "CardFlag", "Consent",
           "Customer", "Device", "ImportedCustomer", "PointsEntry", "Product",
           "ProgrammeVersion", "Purchase", "PurchaseLine", "Redemption", "Refund", "RefundLine",
           "Staff", "Store", "SurveyResponse", "Ticket", "TicketNote", "VaultRecord", "Visit"]

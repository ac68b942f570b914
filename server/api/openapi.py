"""The OpenAPI 3.1 document, built from the same pydantic models that validate requests."""

from __future__ import annotations

from pydantic.json_schema import models_json_schema

from server.accounts.schemas import PaymentIn, PaymentOut
from server.api.body import ROW_ID_MAX
from server.api.problems import PROBLEMS, TYPE_PREFIX
from server.cards.schemas import (
    ActivationIn,
    BlockIn,
    CardIn,
    CardLookupIn,
    CardOut,
    CardStateOut,
    CustomerFound,
    CustomerLookupIn,
    CustomersFound,
    UnblockIn,
    VoidIn,
    VoidOut,
)
from server.devices.views import HeartbeatIn, HeartbeatOut
from server.enrolment.schemas import EnrolmentIn, EnrolmentOut
from server.loyalty.schemas import (
    AdjustmentIn,
    AdjustmentOut,
    PurchaseIn,
    PurchaseOut,
    RedemptionIn,
    RedemptionOut,
    RefundIn,
    RefundOut,
)
from server.privacy.schemas import ConsentChangeIn, ErasureIn, RectifyIn, SearchIn
from server.reports.schemas import AnonymousSalesIn, AnonymousSalesOut
from server.staff.schemas import KioskSessionIn, KioskSessionOut
from server.taps.schemas import BATCH_MAX, CustomerRecord, TapBatchIn, TapBatchOut, TapIn
from server.tickets.schemas import NoteIn, NoteOut, TicketChangeIn, TicketIn, TicketOut, TicketsOut

MODELS = (EnrolmentIn, EnrolmentOut, CardIn, CardOut, TapIn, CustomerRecord, PurchaseIn,
          PurchaseOut, RefundIn, RefundOut, RedemptionIn, RedemptionOut, AdjustmentIn,
          AdjustmentOut, ConsentChangeIn, SearchIn, RectifyIn, ErasureIn, HeartbeatIn,
          HeartbeatOut, ActivationIn, VoidIn, VoidOut, CardLookupIn, CustomerLookupIn,
          CustomerFound, CustomersFound, KioskSessionIn, KioskSessionOut, BlockIn, UnblockIn,
          CardStateOut, AnonymousSalesIn, AnonymousSalesOut, TapBatchIn, TapBatchOut)
CARD = ("card-token-malformed", "card-token-version", "card-token-unknown-key",
        "card-token-forged", "card-not-found", "card-pending", "card-revoked", "card-superseded",
        "customer-not-found", "customer-erased")


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _problems(*slugs: str) -> dict:
    """The problem responses of an operation by status, each naming the exact ``type`` values
    it may carry (so a client, and the schema check of tests/test_fuzz_api.py, knows them)."""
    by_status: dict[str, list[str]] = {}
    for slug in dict.fromkeys(slugs):
        by_status.setdefault(str(PROBLEMS[slug][0]), []).append(slug)
    return {
        status: {
            "description": ", ".join(names),
            "content": {"application/problem+json": {"schema": {"allOf": [
                _ref("Problem"),
                {"properties": {"type": {"enum": [TYPE_PREFIX + n for n in names]}}},
            ]}}},
        }
        for status, names in sorted(by_status.items())
    }


# bad-request: a NUL character in the path or the query; staff-locked-out: a staff
# credential (Basic or X-Staff-Authorization) whose name or address is locked
COMMON = ("malformed-json", "unsupported-media-type", "validation-error", "unauthenticated",
          "invalid-credentials", "forbidden-role", "payload-too-large", "service-unavailable",
          "bad-request", "staff-locked-out")
TOKEN = ("card-token-malformed", "card-token-version", "card-token-unknown-key",
         "card-token-forged")
# an NTAG 424 DNA card's SUN URL at a till (docs/CARDS-424.md)
SUN = ("sun-malformed", "sun-lrp-unsupported", "sun-forged", "card-replayed",
       "card-sun-required")


def _operation(summary: str, roles: str, body: str, status: str, out: str, *problems: str):
    return {
        "summary": summary,
        "description": f"Roles: {roles}. Idempotent on `event_id`: a retry returns the first "
                       "result and writes nothing (header `Idempotent-Replayed: true`).",
        "security": [{"deviceKey": []}, {"staffBasic": []}],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": _ref(body)}}},
        "responses": {status: {"description": "OK",
                               "content": {"application/json": {"schema": _ref(out)}}},
                      **_problems(*COMMON, *problems)},
    }


AUTH = ("unauthenticated", "invalid-credentials", "forbidden-role", "service-unavailable",
        "bad-request", "staff-locked-out")
CUSTOMER_ID = [{"name": "customer_id", "in": "path", "required": True,
                "schema": {"type": "string"}}]


def _privacy(summary: str, roles: str, body: str | None, *problems: str) -> dict:
    """A staff operation on personal data: every call is entered in the audit log."""
    op = {
        "summary": summary,
        "description": f"Roles: {roles}. Entered in the audit log (who, when, which "
                       "customer, which view).",
        "security": [{"staffBasic": []}],
        "responses": {"200": {"description": "OK", "content": {"application/json": {}}},
                      **_problems(*AUTH, *problems)},
    }
    if body:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": _ref(body)}}}
        op["responses"].update(_problems(*AUTH, "malformed-json", "unsupported-media-type",
                                         "validation-error", *problems))
    return op


def _plain(summary: str, description: str, body: str, out: str, *problems: str,
           status: str = "200") -> dict:
    """An operation that is not an event (no ``event_id``): a device or staff call."""
    return {
        "summary": summary,
        "description": description,
        "security": [{"deviceKey": []}, {"staffBasic": []}],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": _ref(body)}}},
        "responses": {status: {"description": "OK",
                               "content": {"application/json": {"schema": _ref(out)}}},
                      **_problems(*COMMON, *problems)},
    }


CARD_ID = [{"name": "card_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _kiosk_paths() -> dict:
    desk = ("Roles: a kiosk with a staff session (`X-Staff-Authorization: Session <token>`) "
            "of a desk, manager or admin; or such a staff member. Audited; no visit recorded.")
    return {
        "/cards/{card_id}/activation": {"parameters": CARD_ID, "post": _plain(
            "A pending NFC card was written and read back: activate it with its UID",
            "Roles: the kiosk that issued the card, or desk staff. Idempotent for the same "
            "UID. Until then every till answers 409 `card-pending`.",
            "ActivationIn", "CardOut", "card-not-found", "staff-required", "card-not-pending")},
        "/cards/{card_id}/void": {"parameters": CARD_ID, "post": _plain(
            "Give up a pending NFC card (write failed, customer left); idempotent",
            "Roles: the kiosk that issued the card, or desk staff. A till then answers 410 "
            "`card-revoked` with reason `void`.",
            "VoidIn", "VoidOut", "card-not-found", "staff-required", "card-not-pending")},
        "/cards/{card_id}/block": {"parameters": CARD_ID, "post": _plain(
            "Block a card (lost, stolen, damaged, other), with an optional note",
            "Roles: desk, manager, admin. Every till then answers 410 `card-revoked` with the "
            "reason, until the card is unblocked. Blocking a blocked card changes nothing. "
            "Entered in the audit log (`card.block`, with the reason and the note: no "
            "personal data in the note).",
            "BlockIn", "CardStateOut", "card-not-found", "staff-required", "card-not-active")},
        "/cards/{card_id}/unblock": {"parameters": CARD_ID, "post": _plain(
            "Unblock a blocked card (found, blocked by mistake, other)",
            "Roles: desk, manager, admin. The card works at the tills again. A replaced or "
            "voided card, an erased customer's, one whose kind the customer has active again "
            "(`card-exists`) or whose key was retired stays refused: issue a new card. "
            "Unblocking an active card changes nothing. Entered in the audit log "
            "(`card.unblock`).",
            "UnblockIn", "CardStateOut", "card-not-found", "staff-required", "card-not-blocked",
            "customer-erased", "card-exists", "card-token-unknown-key")},
        "/cards/lookup": {"post": _plain(
            "Whose card is this (any status): staff mode on a kiosk, the desk", desk,
            "CardLookupIn", "CustomerFound", *TOKEN, "sun-malformed", "sun-forged",
            "sun-lrp-unsupported", "card-not-found", "customer-erased", "staff-required",
            "staff-session-expired")},
        "/customers/lookup": {"post": _plain(
            "Customers by code (any case, dashes optional), or exact email or phone", desk,
            "CustomerLookupIn", "CustomersFound", "staff-required", "staff-session-expired")},
        "/staff/kiosk-sessions": {"post": _plain(
            "Staff mode on a kiosk: a staff card's UID, or a staff name and PIN",
            "Role: kiosk. Answers a token for `X-Staff-Authorization: Session <token>`, valid "
            "on this kiosk only for `ttl` seconds. Five failures for one name or card within "
            "15 minutes (twenty from one kiosk) lock it: 429 with `retry_after`.",
            "KioskSessionIn", "KioskSessionOut", "staff-locked-out", "rate-limited",
            status="201")},
    }


def _export() -> dict:
    op = _privacy("Right of access: everything held, as JSON or (`format=html`) a readable "
                  "document in the customer's language", "desk, manager, admin", None,
                  "customer-not-found")
    op["responses"]["200"]["content"]["text/html"] = {"schema": {"type": "string"}}
    return op


def _privacy_paths() -> dict:
    staff = "desk, manager, admin"
    return {
        "/consent-texts": {"get": {
            "summary": "The published consent texts by version and language (public)",
            "responses": {"200": {"description": "current version and texts",
                                  "content": {"application/json": {}}}}}},
        "/customers/search": {"post": _privacy(
            "Exact lookup by email or phone (normalised: case, spaces, +33/+370)", staff,
            "SearchIn")},
        "/customers/{customer_id}/consents": {
            "parameters": CUSTOMER_ID,
            "get": _privacy("Current consent state and the whole ledger", staff, None,
                            "customer-not-found"),
            "post": _privacy("Record new decisions (given or withdrawn)", staff,
                             "ConsentChangeIn", "customer-not-found", "customer-erased",
                             "consent-version-unknown", "consent-terms-withdrawal"),
        },
        "/customers/{customer_id}/personal-data": {
            "parameters": CUSTOMER_ID,
            "get": _privacy("Identity and contact details", staff, None,
                            "customer-not-found", "customer-erased"),
            "patch": _privacy("Rectify personal data, with a reason", staff, "RectifyIn",
                              "customer-not-found", "customer-erased"),
        },
        "/customers/{customer_id}/export": {
            "parameters": [*CUSTOMER_ID,
                           {"name": "format", "in": "query",
                            "schema": {"enum": ["json", "html"]}},
                           {"name": "lang", "in": "query", "description": "of the html "
                            "document; the customer's language by default",
                            "schema": {"enum": ["fr", "lt", "en"]}}],
            "get": _export(),
        },
        "/customers/{customer_id}/erasure": {
            "parameters": CUSTOMER_ID,
            "post": _privacy("Right to erasure: the vault row and its key are destroyed, "
                             "cards revoked, pseudonymous history kept", "manager, admin",
                             "ErasureIn", "customer-not-found"),
        },
        "/privacy/retention": {"get": _privacy(
            "Customers inactive past the retention period", "manager, admin", None)},
        "/audit": {"parameters": [
            {"name": "customer_id", "in": "query", "schema": {"type": "string"}},
            {"name": "before", "in": "query", "description": "entries older than this id",
             "schema": {"type": "integer", "minimum": 0, "maximum": ROW_ID_MAX}}],
            "get": _privacy("The audit log, newest first (200 entries)", "admin", None,
                            "validation-error")},
        "/audit/verify": {"get": _privacy("Recompute the audit log's hash chain", "admin",
                                          None)},
    }


TICKET_MODELS = (TicketIn, TicketChangeIn, NoteIn, TicketOut, NoteOut, TicketsOut)
TICKET_ID = [{"name": "ticket_id", "in": "path", "required": True,
              "schema": {"type": "integer", "minimum": 0, "maximum": ROW_ID_MAX},
              "description": "Outside this range the path is not a route: 404 `not-found` "
                             "(405 if an encoded slash makes it another route)"}]


def _ticket_paths() -> dict:
    """Warranty claims, support issues and complaints (staff: desk, manager, admin)."""
    roles = "Roles: desk, manager, admin (staff credential). "

    def read(summary: str, out: str, *problems: str) -> dict:
        return {"summary": summary, "description": roles.strip(),
                "security": [{"staffBasic": []}],
                "responses": {"200": {"description": "OK", "content": {
                    "application/json": {"schema": _ref(out)}}}, **_problems(*AUTH, *problems)}}

    def write(summary: str, description: str, body: str, out: str, *problems: str,
              status: str) -> dict:
        op = _plain(summary, roles + description, body, out, *problems, status=status)
        op["security"] = [{"staffBasic": []}]
        return op

    return {
        "/customers/{customer_id}/tickets": {
            "parameters": CUSTOMER_ID,
            "get": read("The customer's tickets, open ones first", "TicketsOut",
                        "customer-not-found"),
            "post": write(
                "Open a warranty claim, a support issue or a complaint",
                "A warranty claim names a purchase line of this customer: the product, "
                "purchase date and warranty end (the product's warranty months from the "
                "catalogue) are taken from it; `warranty` says in or out, never refused.",
                "TicketIn", "TicketOut", "customer-not-found", "customer-erased",
                "purchase-line-not-found", status="201"),
        },
        "/tickets/{ticket_id}": {
            "parameters": TICKET_ID,
            "get": read("One ticket with its history of notes and changes", "TicketOut",
                        "ticket-not-found", "not-found", "method-not-allowed"),
            "patch": write(
                "Change the status, assignee or due date",
                "Each change is kept in the history (who, when, before and after), with "
                "`note` saying why. A closed ticket can only be reopened.",
                "TicketChangeIn", "TicketOut", "ticket-not-found", "not-found",
                "method-not-allowed", "ticket-closed", status="200"),
        },
        "/tickets/{ticket_id}/notes": {
            "parameters": TICKET_ID,
            "post": write("Add a note to the ticket's history",
                          "Notes may hold personal details: erasure blanks them.",
                          "NoteIn", "NoteOut", "ticket-not-found", "not-found",
                          "method-not-allowed", "ticket-closed", status="201"),
        },
    }


ACCOUNT_MODELS = (PaymentIn, PaymentOut)


def _account_paths() -> dict:
    """Account customers: payments on account and the account's state."""
    return {
        "/accounts/{customer_id}/payments": {
            "parameters": CUSTOMER_ID,
            "post": _operation(
                "A payment towards the customer's account", "till, manager, admin",
                "PaymentIn", "201", "PaymentOut", "no-account", "event-id-conflict"),
        },
        "/accounts/{customer_id}": {
            "parameters": CUSTOMER_ID,
            "get": {"summary": "The account: credit limit, terms, balance due, punctuality "
                               "(desk, manager, admin)",
                    "security": [{"staffBasic": []}],
                    "responses": {"200": {"description": "the account"},
                                  **_problems(*AUTH, "no-account")}},
        },
    }
def _campaign_paths() -> dict:
    """The SMS gateway's inbound messages (campaigns: the STOP keyword)."""
    inbound = {"type": "object", "required": ["from", "text"],
               "properties": {"from": {"type": "string", "description": "E.164 number"},
                              "text": {"type": "string"}}}
    answer = {"type": "object", "properties": {"stop": {"type": "boolean"},
                                               "withdrawn": {"type": "integer"}}}
    return {"/sms/inbound": {"post": {
        "summary": "A text message a customer sent to the shop's number",
        "description": "Called by the SMS gateway with `Authorization: Bearer "
                       "<SMS_INBOUND_SECRET>`. A stop word (STOP, ARRET, ATSISAKYTI) "
                       "withdraws the marketing_sms consent of every customer with that "
                       "number; other messages change nothing.",
        "security": [{"smsGateway": []}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": inbound}}},
        "responses": {"200": {"description": "OK", "content": {"application/json": {
            "schema": answer}}},
            **_problems("unauthenticated", "invalid-credentials", "validation-error",
                        "service-unavailable")}}}}


# what one tap of a batch may answer, as POST /taps would
TAP_PROBLEMS = (*TOKEN, *SUN, "card-not-found", "card-pending", "card-revoked",
                "card-superseded", "uid-only-disabled", "card-rate-limited", "event-id-conflict")


def _tap_batch() -> dict:
    """POST /taps/batch: a till agent replaying its offline queue."""
    op = _plain(
        "Taps from a till's offline queue, in order, without their records", "",
        "TapBatchIn", "TapBatchOut", "batch-too-large", "rate-limited")
    op["description"] = (
        f"Role: till. Up to {BATCH_MAX} taps, each recorded exactly as `POST /taps` would "
        "(same validation, clone signals and idempotence on its `event_id`), in the order "
        "sent, each on its own: a refused tap does not undo the others. The answer gives, per "
        "tap, `recorded`, `replayed` (that event id was recorded before: nothing written) or "
        "`problem` with the problem document `POST /taps` would answer (its `type` is one of: "
        + ", ".join(f"`{slug}`" for slug in TAP_PROBLEMS) + "), and the `visit_id`; the "
        "customer records are not built (ask `POST /taps` for one). The batch commits once. "
        "A body that does not validate is refused whole (422), as is one with more taps than "
        f"allowed (413 `batch-too-large`, with `max`: {BATCH_MAX}, or the till's tap rate "
        "limit per window if lower). Rate limit: each tap of the batch counts as one tap "
        "against the till's tap limit (`RATELIMIT_TAPS`); a batch that does not fit in what "
        "is left of the window is refused whole with 429 `rate-limited` and `Retry-After`.")
    op["security"] = [{"deviceKey": []}]
    return op


def build() -> dict:
    _, schemas = models_json_schema([(m, "validation") for m in MODELS + TICKET_MODELS
                                     + ACCOUNT_MODELS],
                                    ref_template="#/components/schemas/{model}")
    components = schemas.get("$defs", {})
    components["Problem"] = {
        "type": "object",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string", "enum": [TYPE_PREFIX + s for s in PROBLEMS]},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Loyalty card service", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "components": {
            "schemas": components,
            "securitySchemes": {
                "deviceKey": {"type": "http", "scheme": "bearer",
                              "description": "A device key from `flask devices add`"},
                "smsGateway": {"type": "http", "scheme": "bearer",
                               "description": "The shared secret SMS_INBOUND_SECRET"},
                "staffBasic": {"type": "http", "scheme": "basic",
                               "description": "A staff account; on a kiosk, sent as "
                                              "X-Staff-Authorization next to the device key"},
            },
        },
        "paths": {
            "/enrolments": {"post": _operation(
                "Enrol a customer", "kiosk", "EnrolmentIn", "201", "EnrolmentOut",
                "consent-required", "consent-version-unknown", "event-id-conflict",
                "rate-limited")},
            "/customers/{customer_id}/cards": {
                "parameters": [{"name": "customer_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "post": _operation(
                    "Issue or replace a card", "kiosk (own fresh enrolments), desk, manager, "
                    "admin; replace needs a staff member", "CardIn", "201", "CardOut",
                    "customer-not-found", "staff-required", "card-exists", "event-id-conflict"),
            },
            "/taps": {"post": _operation(
                "A card tapped at a till", "till", "TapIn", "200", "CustomerRecord",
                *TOKEN, *SUN, "card-not-found", "card-pending", "card-revoked",
                "card-superseded", "uid-only-disabled", "card-rate-limited",
                "event-id-conflict", "rate-limited")},
            "/taps/batch": {"post": _tap_batch()},
            "/purchases": {"post": _operation(
                "A purchase: the points each line earns", "till", "PurchaseIn", "201",
                "PurchaseOut", *CARD, "currency-mismatch", "store-mismatch", "total-mismatch",
                "reward-used", "reward-not-found", "no-account", "credit-limit-exceeded",
                "event-id-conflict")},
            "/refunds": {"post": _operation(
                "A whole or partial return: exactly the points those lines earned come back",
                "till", "RefundIn", "201", "RefundOut", "purchase-not-found",
                "already-refunded", "event-id-conflict")},
            "/redemptions": {"post": _operation(
                "Spend points on a reward", "till (a staff member confirms above the step-up "
                "threshold with X-Staff-Authorization)", "RedemptionIn", "201",
                "RedemptionOut", *CARD, "reward-not-found", "reward-not-allowed",
                "step-up-required", "insufficient-points", "event-id-conflict")},
            "/customers/{customer_id}/points": {
                "parameters": [{"name": "customer_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "post": _operation(
                    "A manual adjustment with its reason", "manager, admin", "AdjustmentIn",
                    "201", "AdjustmentOut", "customer-not-found", "insufficient-points",
                    "event-id-conflict"),
                "get": {"summary": "The points ledger of one customer, newest first "
                                   "(desk, manager, admin)",
                        "security": [{"staffBasic": []}],
                        "responses": {"200": {"description": "entries and balance"},
                                      **_problems(*AUTH, "customer-not-found")}},
            },
            "/programme": {
                "get": {"summary": "The programme in force (rules, tiers, rewards)",
                        "security": [{"deviceKey": []}, {"staffBasic": []}],
                        "responses": {"200": {"description": "version and programme",
                                              "content": {"application/json": {}}},
                                      **_problems(*AUTH)}},
                "put": {"summary": "Load a new programme version (TOML); managers",
                        "security": [{"staffBasic": []}],
                        "requestBody": {"required": True, "content": {
                            "application/toml": {"schema": {"type": "string"}}}},
                        "responses": {"200": {"description": "the new version",
                                              "content": {"application/json": {}}},
                                      **_problems(*AUTH, "invalid-programme",
                                                  "unsupported-media-type",
                                                  "payload-too-large")}},
            },
            "/devices/heartbeat": {"post": {
                "summary": "A device is alive: its readers' states and offline queue "
                           "(till, kiosk)",
                "description": "Stores the time (`last_seen_at`) and the report on the "
                               "device; a state, not an event, so no `event_id`: a repeat "
                               "only refreshes it. Till agents send one every 30 s.",
                "security": [{"deviceKey": []}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("HeartbeatIn")}}},
                "responses": {"200": {"description": "OK", "content": {
                    "application/json": {"schema": _ref("HeartbeatOut")}}},
                    **_problems(*COMMON)},
            }},
            "/anonymous-sales": {"put": {
                **_plain("A till's sales without a card on one day, for one seller",
                         "Role: till. A state, not an event: the figures for this till, day "
                         "and seller replace any sent before (send the day's totals so far, "
                         "as often as wanted). The reports divide card holders' sales by all "
                         "sales with them: the share of sales to card holders.",
                         "AnonymousSalesIn", "AnonymousSalesOut", "currency-mismatch"),
                "security": [{"deviceKey": []}]}},
            **_privacy_paths(),
            **_kiosk_paths(),
            **_ticket_paths(),
            **_account_paths(),
            **_campaign_paths(),
        },
    }

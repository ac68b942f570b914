"""RFC 9457 problem details with stable types: every API error is one of these."""

from __future__ import annotations

from typing import Any

from flask import Response, json

# slug -> (HTTP status, title). The slug is the stable part of the type URI; never rename one.
PROBLEMS: dict[str, tuple[int, str]] = {
    "bad-request": (400, "The request is not understood"),
    "malformed-json": (400, "The body is not valid JSON"),
    "unauthenticated": (401, "A device key or staff credential is required"),
    "invalid-credentials": (401, "The key or credential is unknown, revoked or wrong"),
    "staff-session-expired": (401, "The staff session has ended: sign in again"),
    "forbidden-role": (403, "This device or account may not do that"),
    "staff-required": (403, "A staff member with the right role must confirm this"),
    "step-up-required": (403, "This redemption needs the customer's PIN or a staff check"),
    "reward-not-allowed": (403, "This reward is not available to this customer here"),
    "pin-invalid": (403, "The PIN is wrong"),
    "pin-locked": (403, "Too many wrong PINs: a member of staff must confirm"),
    "uid-only-disabled": (403, "This store does not accept cards identified by their UID alone"),
    "card-sun-required": (403, "This card is accepted only through its secure NFC (SUN) URL"),
    "not-found": (404, "No such resource"),
    "customer-not-found": (404, "No such customer"),
    "card-not-found": (404, "No such card"),
    "purchase-not-found": (404, "No such purchase"),
    "reward-not-found": (404, "No such reward in the programme"),
    "ticket-not-found": (404, "No such ticket"),
    "segment-not-found": (404, "No such segment"),
    "purchase-line-not-found": (404, "No such purchase line for this customer"),
    "method-not-allowed": (405, "Method not allowed"),
    "consent-terms-withdrawal": (409, "The terms cannot be withdrawn alone: erase the account"),
    "segment-name-taken": (409, "Another segment already has this name"),
    "card-exists": (409, "The customer already has an active card of this kind"),
    "event-id-conflict": (409, "This event id was already used for something else"),
    "card-pending": (409, "This card has not been written and activated yet"),
    "card-not-pending": (409, "This card is no longer waiting to be written"),
    "card-replayed": (409, "This card's secure NFC message was used before: a copy or a replay"),
    "insufficient-points": (409, "The customer does not have enough points"),
    "already-refunded": (409, "These items have already been returned"),
    "reward-used": (409, "This reward has already been used"),
    "ticket-closed": (409, "This ticket is closed: reopen it first"),
    "card-revoked": (410, "This card has been revoked"),
    "card-superseded": (410, "This card was replaced by a newer one"),
    "customer-erased": (410, "This customer's personal data has been erased"),
    "card-rate-limited": (429, "This card is tapped faster than a person could: "
                               "wait, or see the desk"),
    "staff-locked-out": (429, "Too many failed sign-ins: wait, or ask a manager"),
    "rate-limited": (429, "Too many requests from this device or address: wait and retry"),
    "payload-too-large": (413, "The request body is too large"),
    "batch-too-large": (413, "Too many events in one batch: send fewer at a time"),
    "unsupported-media-type": (415, "Send the body as application/json"),
    "validation-error": (422, "The request does not match the schema"),
    "consent-required": (422, "The terms of the programme must be accepted"),
    "consent-version-unknown": (422, "The consent text version named is not published"),
    "total-mismatch": (422, "The total does not match the lines"),
    "currency-mismatch": (422, "The programme runs in another currency"),
    "store-mismatch": (422, "This device belongs to another store"),
    "invalid-programme": (422, "The programme document is not valid"),
    "card-token-invalid": (422, "The card token is not valid"),
    "card-token-malformed": (422, "The card token is malformed"),
    "card-token-version": (422, "The card token format is not supported"),
    "card-token-unknown-key": (422, "The card token was signed with an unknown or retired key"),
    "card-token-forged": (422, "The card token signature does not match"),
    "sun-invalid": (422, "The card's secure NFC (SUN) message is not valid"),
    "sun-malformed": (422, "The card's secure NFC (SUN) message is malformed"),
    "sun-lrp-unsupported": (422, "The card's SUN message is in LRP mode, which is not supported"),
    "sun-forged": (422, "The card's secure NFC (SUN) message does not verify"),
    "internal-error": (500, "Internal error"),
    "service-unavailable": (503, "The service is busy or a database is unreachable; try again"),
    "no-account": (409, "This customer has no open account: the purchase cannot go on account"),
    "credit-limit-exceeded": (409, "This purchase would take the account over its credit limit"),
    "card-not-active": (409, "Only an active card can be blocked"),
    "card-not-blocked": (409, "This card is not blocked: a replaced or cancelled card cannot "
                              "be unblocked"),
}

TYPE_PREFIX = "/api/v1/problems/"
MEDIA_TYPE = "application/problem+json"


class Problem(Exception):  # noqa: N818 - it is a response, not only an error
    """Raise to answer with a problem document."""

    def __init__(self, slug: str, detail: str | None = None, **extra: Any) -> None:
        if slug not in PROBLEMS:
            raise ValueError(f"unknown problem type {slug!r}")
        super().__init__(detail or PROBLEMS[slug][1])
        self.slug = slug
        self.detail = detail
        self.extra = extra

    @property
    def status(self) -> int:
        return PROBLEMS[self.slug][0]


def problem_response(slug: str, detail: str | None = None, **extra: Any) -> Response:
    status, title = PROBLEMS[slug]
    body: dict[str, Any] = {"type": TYPE_PREFIX + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = {"WWW-Authenticate": 'Bearer realm="loyalty"'} if status == 401 else {}
    if isinstance(extra.get("retry_after"), int):
        headers["Retry-After"] = str(extra["retry_after"])
    return Response(json.dumps(body), status=status, mimetype=MEDIA_TYPE, headers=headers)


def from_problem(problem: Problem) -> Response:
    return problem_response(problem.slug, problem.detail, **problem.extra)

"""The customer as every answer shows them: neutral id, name as a till may see it, standing."""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.vault.service import display_name, read_personal_data


def summary(vault: Session, customer_id: str, language: str, tier: str, points: int) -> dict:
    """The fields an enrolment and a tap both answer with (one vault read)."""
    return {
        "customer_id": customer_id,
        "display_name": display_name(read_personal_data(vault, customer_id)),
        "language": language,
        "tier": tier,
        "points": points,
    }

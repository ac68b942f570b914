"""kiosk: staff PIN and staff card, failed sign-ins (lockout)

Revision ID: 0009_kiosk_staff
Revises: 0008_visits_by_card
Create Date: 2026-11-24 12:50:00

Cards gain two statuses without a schema change: ``pending`` (an NFC card issued but not
yet written and read back) and ``void`` (its write was given up).
"""

import sqlalchemy as sa
from alembic import op

revision = '0009_kiosk_staff'
down_revision = '0008_visits_by_card'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pin_hash', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('card_uid_hash', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_staff_card_uid_hash', ['card_uid_hash'], unique=True)
    op.create_table(
        'auth_failures',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('subject', sa.String(length=100), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_auth_failures')),
    )
    op.create_index('ix_auth_failures_subject_at', 'auth_failures', ['subject', 'at'])


def downgrade() -> None:
    op.drop_index('ix_auth_failures_subject_at', table_name='auth_failures')
    op.drop_table('auth_failures')
    with op.batch_alter_table('staff', schema=None) as batch_op:
        batch_op.drop_index('ix_staff_card_uid_hash')
        batch_op.drop_column('card_uid_hash')
        batch_op.drop_column('pin_hash')

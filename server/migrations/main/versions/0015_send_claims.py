"""send claims: a shared pace per sending channel (campaign throttling across processes and
nodes); statements claimed before they are sent, releasable if a crash leaves the claim

Revision ID: 0015_send_claims
Revises: 0014_reports
Create Date: 2026-11-24 17:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0015_send_claims'
down_revision = '0014_reports'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'send_pace',
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('next_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('channel', name=op.f('pk_send_pace')),
    )
    with op.batch_alter_table('statements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('retry', sa.Boolean(), nullable=False,
                                      server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table('statements', schema=None) as batch_op:
        batch_op.drop_column('retry')
        batch_op.drop_column('claimed_at')
    op.drop_table('send_pace')

"""value: the value-score snapshot (value_scores, value_snapshots), refreshed nightly

Revision ID: 0016_value_snapshot
Revises: 0015_send_claims
Create Date: 2026-11-24 17:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0016_value_snapshot'
down_revision = '0015_send_claims'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'value_snapshots',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('programme_version', sa.Integer(), nullable=False),
        sa.Column('window_months', sa.Integer(), nullable=False),
        sa.Column('active', sa.Integer(), nullable=False),
        sa.Column('live', sa.Integer(), nullable=False),
        sa.Column('premium', sa.Integer(), nullable=False),
        sa.Column('high', sa.Integer(), nullable=False),
        sa.Column('medium', sa.Integer(), nullable=False),
        sa.Column('low', sa.Integer(), nullable=False),
        sa.Column('refreshed_by', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_value_snapshots')),
    )
    op.create_table(
        'value_scores',
        sa.Column('customer_id', sa.String(length=16), nullable=False),
        sa.Column('purchases', sa.Integer(), nullable=False),
        sa.Column('net_cents', sa.BigInteger(), nullable=False),
        sa.Column('last_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('tickets', sa.Integer(), nullable=False),
        sa.Column('load_milli', sa.Integer(), nullable=False),
        sa.Column('on_time', sa.Integer(), nullable=True),
        sa.Column('active', sa.Integer(), nullable=False),
        sa.Column('recency', sa.Integer(), nullable=False),
        sa.Column('frequency', sa.Integer(), nullable=False),
        sa.Column('monetary', sa.Integer(), nullable=False),
        sa.Column('support', sa.Integer(), nullable=False),
        sa.Column('punctuality', sa.Integer(), nullable=True),
        sa.Column('score', sa.Integer(), nullable=False),
        sa.Column('place', sa.Integer(), nullable=False),
        sa.Column('band', sa.String(length=8), nullable=False),
        sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_value_scores')),
    )
    with op.batch_alter_table('value_scores', schema=None) as batch_op:
        batch_op.create_index('ix_value_scores_place', ['place', 'net_cents', 'customer_id'],
                              unique=False)
        batch_op.create_index('ix_value_scores_band_place', ['band', 'place'], unique=False)
        batch_op.create_index('ix_value_scores_score', ['score'], unique=False)


def downgrade() -> None:
    op.drop_table('value_scores')
    op.drop_table('value_snapshots')

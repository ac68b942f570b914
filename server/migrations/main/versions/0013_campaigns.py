"""campaigns: campaigns, their send log, the month-day of consenting customers' birthdays

Revision ID: 0013_campaigns
Revises: 0012_accounts_statements
Create Date: 2026-11-24 14:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0013_campaigns'
down_revision = '0012_accounts_statements'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'campaigns',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=120), nullable=False),
        sa.Column('channel', sa.String(length=8), nullable=False),
        sa.Column('status', sa.String(length=8), nullable=False),
        sa.Column('trigger', sa.String(length=20), nullable=True),
        sa.Column('trigger_days', sa.Integer(), nullable=True),
        sa.Column('templates', sa.JSON(), nullable=False),
        sa.Column('segment_id', sa.Integer(), nullable=True),
        sa.Column('segment_definition', sa.JSON(), nullable=True),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("channel IN ('email', 'sms')", name=op.f('ck_campaigns_channel')),
        sa.CheckConstraint("status IN ('draft', 'queued', 'active', 'paused')",
                           name=op.f('ck_campaigns_status')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_campaigns')),
    )
    op.create_table(
        'campaign_messages',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('campaign_id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.String(length=16), nullable=False),
        sa.Column('channel', sa.String(length=8), nullable=False),
        sa.Column('trigger_key', sa.String(length=40), nullable=False),
        sa.Column('status', sa.String(length=8), nullable=False),
        sa.Column('reason', sa.String(length=200), nullable=True),
        sa.Column('retry', sa.Boolean(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('provider_id', sa.String(length=100), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('queued', 'sending', 'sent', 'failed', 'skipped')",
                           name=op.f('ck_campaign_messages_status')),
        sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'],
                                name=op.f('fk_campaign_messages_campaign_id_campaigns')),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id'],
                                name=op.f('fk_campaign_messages_customer_id_customers')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_messages')),
        sa.UniqueConstraint('campaign_id', 'customer_id', 'channel', 'trigger_key',
                            name='uq_campaign_messages_once'),
    )
    with op.batch_alter_table('campaign_messages', schema=None) as batch_op:
        batch_op.create_index('ix_campaign_messages_campaign_status',
                              ['campaign_id', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_campaign_messages_customer_id'), ['customer_id'],
                              unique=False)
    op.create_table(
        'campaign_birthdays',
        sa.Column('customer_id', sa.String(length=16), nullable=False),
        sa.Column('month_day', sa.String(length=5), nullable=True),
        sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id'],
                                name=op.f('fk_campaign_birthdays_customer_id_customers')),
        sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_campaign_birthdays')),
    )
    with op.batch_alter_table('campaign_birthdays', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaign_birthdays_month_day'), ['month_day'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('campaign_birthdays', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_birthdays_month_day'))
    op.drop_table('campaign_birthdays')
    with op.batch_alter_table('campaign_messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_campaign_messages_customer_id'))
        batch_op.drop_index('ix_campaign_messages_campaign_status')
    op.drop_table('campaign_messages')
    op.drop_table('campaigns')

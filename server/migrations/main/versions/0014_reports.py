"""reports: the tills' daily sales without a card (the share of sales to card holders);
purchases by date (the reports read a range of dates across all customers)

Revision ID: 0014_reports
Revises: 0013_campaigns
Create Date: 2026-11-24 14:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0014_reports'
down_revision = '0013_campaigns'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'anonymous_sales',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('device_id', sa.Integer(), nullable=False),
        sa.Column('store_id', sa.Integer(), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('seller', sa.String(length=64), nullable=False),
        sa.Column('baskets', sa.Integer(), nullable=False),
        sa.Column('total_cents', sa.Integer(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('baskets >= 0 AND total_cents >= 0',
                           name=op.f('ck_anonymous_sales_not_negative')),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                                name=op.f('fk_anonymous_sales_device_id_devices')),
        sa.ForeignKeyConstraint(['store_id'], ['stores.id'],
                                name=op.f('fk_anonymous_sales_store_id_stores')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_anonymous_sales')),
        sa.UniqueConstraint('device_id', 'day', 'seller',
                            name=op.f('uq_anonymous_sales_device_id')),
    )
    with op.batch_alter_table('anonymous_sales', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_anonymous_sales_day'), ['day'], unique=False)
        batch_op.create_index(batch_op.f('ix_anonymous_sales_store_id'), ['store_id'],
                              unique=False)
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_purchases_paid_at'), ['paid_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_purchases_paid_at'))
    with op.batch_alter_table('anonymous_sales', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_anonymous_sales_store_id'))
        batch_op.drop_index(batch_op.f('ix_anonymous_sales_day'))
    op.drop_table('anonymous_sales')

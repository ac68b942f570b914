"""tickets: the products catalogue (warranty months), tickets and their notes

Revision ID: 0010_tickets
Revises: 0009_kiosk_staff
Create Date: 2026-11-24 13:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0010_tickets'
down_revision = '0009_kiosk_staff'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'products',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('sku', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('category', sa.String(length=64), nullable=True),
        sa.Column('warranty_months', sa.Integer(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('warranty_months >= 0', name=op.f('ck_products_warranty_months')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_products')),
        sa.UniqueConstraint('sku', name=op.f('uq_products_sku')),
    )
    op.create_table(
        'tickets',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.String(length=16), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('subject', sa.String(length=120), nullable=False),
        sa.Column('purchase_line_id', sa.Integer(), nullable=True),
        sa.Column('sku', sa.String(length=64), nullable=True),
        sa.Column('product_name', sa.String(length=200), nullable=True),
        sa.Column('serial_number', sa.String(length=64), nullable=True),
        sa.Column('purchase_date', sa.Date(), nullable=True),
        sa.Column('warranty_end', sa.Date(), nullable=True),
        sa.Column('store_id', sa.Integer(), nullable=True),
        sa.Column('assignee_staff_id', sa.Integer(), nullable=True),
        sa.Column('due_date', sa.Date(), nullable=True),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('warranty', 'support', 'complaint')",
                           name=op.f('ck_tickets_kind')),
        sa.CheckConstraint("status IN ('open', 'in-progress', 'waiting', 'resolved', 'closed')",
                           name=op.f('ck_tickets_status')),
        sa.ForeignKeyConstraint(['assignee_staff_id'], ['staff.id'],
                                name=op.f('fk_tickets_assignee_staff_id_staff')),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id'],
                                name=op.f('fk_tickets_customer_id_customers')),
        sa.ForeignKeyConstraint(['purchase_line_id'], ['purchase_lines.id'],
                                name=op.f('fk_tickets_purchase_line_id_purchase_lines')),
        sa.ForeignKeyConstraint(['store_id'], ['stores.id'],
                                name=op.f('fk_tickets_store_id_stores')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_tickets')),
    )
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tickets_assignee_staff_id'), ['assignee_staff_id'],
                              unique=False)
        batch_op.create_index('ix_tickets_customer_status', ['customer_id', 'status'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_tickets_purchase_line_id'), ['purchase_line_id'],
                              unique=False)
        batch_op.create_index('ix_tickets_status_due', ['status', 'due_date'], unique=False)
        batch_op.create_index(batch_op.f('ix_tickets_store_id'), ['store_id'], unique=False)
    op.create_table(
        'ticket_notes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ticket_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('author', sa.String(length=64), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('text', sa.String(length=2000), nullable=False),
        sa.Column('old_value', sa.String(length=64), nullable=True),
        sa.Column('new_value', sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'],
                                name=op.f('fk_ticket_notes_ticket_id_tickets')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ticket_notes')),
    )
    with op.batch_alter_table('ticket_notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ticket_notes_ticket_id'), ['ticket_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ticket_notes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ticket_notes_ticket_id'))
    op.drop_table('ticket_notes')
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tickets_store_id'))
        batch_op.drop_index('ix_tickets_status_due')
        batch_op.drop_index(batch_op.f('ix_tickets_purchase_line_id'))
        batch_op.drop_index('ix_tickets_customer_status')
        batch_op.drop_index(batch_op.f('ix_tickets_assignee_staff_id'))
    op.drop_table('tickets')
    op.drop_table('products')

"""Fill a loyalty database with a realistic chain: stores, customers, cards, purchases, ...

    python bench/generate.py --database-url URL --vault-url URL --customers N --purchases M
                             [--seed S] [--instance DIR]

The schema is the project's own (``server.migrate.upgrade`` on empty databases); the rows are
then loaded in bulk: ``COPY`` on PostgreSQL, ``executemany`` in large transactions on SQLite
(journal off during the load, WAL again after). Secondary indexes are dropped for the load
and made again afterwards with their own definitions.

Every row is one the app could have written itself: a customer's ``points`` is the sum of
their ledger, a purchase's total and points the sums of its lines, a line's refunded
quantity the sum of its refund lines, a customer's tier what their qualifying points of the
last 12 months make it, vault rows encrypted with the project's vault code under the
instance's key file. Statements are built by the project's own ``build_statement``; on
PostgreSQL the report aggregates (``sales_days``, ``customer_days``...: the bulk load skips
their triggers) are rebuilt at the end by the project's own ``rebuild``.

Distributions: stores of a chain in regions (France and Lithuania), each customer with a
home store and some share of purchases elsewhere (mostly in the same region); purchases per
customer heavy-tailed (many one-off buyers, a few heavy ones, a fifth never buying);
prices log-normal by category; seasonality by month, weekday and hour; a few refunds,
redemptions, tickets, visits without purchase, account customers with payments.

The instance folder (default ``$LOYALTY_INSTANCE_PATH`` or ``instance``) receives the key
files and ``bench.json``: the device keys of every till and kiosk and the staff passwords,
for the benchmark (``bench/run.py``) to use.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import random
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHUNK = 20_000  # customers generated and written per batch

REGIONS = [  # (country, region, cities, weight)
    ("FR", "Île-de-France", ["PARIS", "VERSAILLES", "CRETEIL", "NANTERRE"], 5),
    ("FR", "Auvergne-Rhône-Alpes", ["LYON", "GRENOBLE", "CLERMONT"], 3),
    ("FR", "Provence-Alpes-Côte d'Azur", ["MARSEILLE", "NICE", "TOULON"], 2),
    ("FR", "Occitanie", ["TOULOUSE", "MONTPELLIER"], 2),
    ("FR", "Hauts-de-France", ["LILLE", "AMIENS"], 2),
    ("FR", "Nouvelle-Aquitaine", ["BORDEAUX", "LIMOGES"], 2),
    ("LT", "Vilnius", ["VILNIUS"], 2),
    ("LT", "Kaunas", ["KAUNAS"], 1),
    ("LT", "Klaipėda", ["KLAIPEDA"], 1),
]

# category: (median price in cents, sigma of log-price, warranty months, share of the catalogue)
CATEGORIES = {
    "groceries": (450, 0.6, 0, 0.28), "bakery": (250, 0.4, 0, 0.08),
    "drinks": (600, 0.6, 0, 0.10), "household": (900, 0.7, 0, 0.08),
    "clothing": (2900, 0.6, 0, 0.10), "shoes": (5900, 0.5, 0, 0.05),
    "electronics": (8900, 1.0, 24, 0.06), "toys": (1900, 0.7, 0, 0.05),
    "books": (1500, 0.4, 0, 0.04), "garden": (2500, 0.8, 12, 0.04),
    "beauty": (1200, 0.6, 0, 0.06), "gift-cards": (2500, 0.5, 0, 0.03),
    "tobacco": (1000, 0.2, 0, 0.03),
}
EXCLUDED = {"gift-cards", "tobacco"}  # the default programme's exclusions: they earn nothing
DOUBLE = {"shoes"}  # the default programme's multiplier
MONTH_WEIGHT = [1.1, 0.8, 0.9, 0.9, 1.0, 1.0, 1.1, 1.0, 0.9, 1.0, 1.2, 1.7]
WEEKDAY_WEIGHT = [0.8, 0.85, 0.9, 1.0, 1.25, 1.6, 0.45]  # Monday first
HOUR_WEIGHT = {9: 3, 10: 6, 11: 8, 12: 9, 13: 7, 14: 6, 15: 7, 16: 8, 17: 10, 18: 10,
               19: 6, 20: 2}
FIRST = {"fr": ["Élodie", "Camille", "Léa", "Manon", "Chloé", "Inès", "Louis", "Gabriel",
                "Jules", "Hugo", "Lucas", "Théo", "Raphaël", "Zoé", "Anaïs", "Noé"],
         "lt": ["Jūratė", "Rūta", "Eglė", "Ieva", "Agnė", "Lukas", "Matas", "Jonas", "Domas",
                "Tomas", "Gabija", "Austėja", "Mantas", "Kajus"],
         "en": ["Emma", "Olivia", "Amelia", "Jack", "Oliver", "Harry", "George", "Lily"]}
LAST = {"fr": ["Durand", "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit",
               "Moreau", "Laurent", "Lefèvre", "Fournier", "Girard", "Bonnet", "Lambert"],
        "lt": ["Kazlauskaitė", "Jankauskas", "Petrauskas", "Stankevičius", "Vasiliauskas",
               "Žukauskas", "Butkus", "Paulauskas", "Urbonas", "Kavaliauskas"],
        "en": ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Davies", "Evans"]}
STREETS = {"FR": ["rue de Rivoli", "avenue Jean Jaurès", "boulevard Voltaire", "rue Victor Hugo"],
           "LT": ["Gedimino pr.", "Laisvės al.", "Pilies g.", "Savanorių pr."]}
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # server.enrolment.service.ALPHABET
CONSENT_CHANNEL = "kiosk"
AGE_BANDS = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"),
             (65, "55-64"))


def ts(moment: datetime) -> str:
    """A UTC moment as SQLAlchemy stores it on SQLite; PostgreSQL (session in UTC) reads it."""
    text = moment.isoformat(" ")
    return text if moment.microsecond else text + ".000000"


class Sink:
    """Where rows go: one open transaction per chunk on SQLite, COPY on PostgreSQL."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.raw = engine.raw_connection()
        self.columns: dict[str, list[str]] = {}
        self.dropped: list[str] = []
        cur = self.raw.cursor()
        if self.sqlite:
            for pragma in ("journal_mode=OFF", "synchronous=OFF", "foreign_keys=OFF",
                           "cache_size=-400000", "temp_store=MEMORY", "secure_delete=OFF",
                           "locking_mode=EXCLUSIVE"):
                cur.execute(f"PRAGMA {pragma}")
        else:
            cur.execute("SET TIME ZONE 'UTC'")
            try:  # no foreign-key triggers during the load (the rows are consistent by making)
                cur.execute("SET session_replication_role = replica")
            except Exception:
                self.raw.rollback()
                cur = self.raw.cursor()
                cur.execute("SET TIME ZONE 'UTC'")
        self.raw.commit()

    def drop_indexes(self, tables: list[str]) -> None:
        """Drop the plain secondary indexes of the bulk tables; ``restore_indexes`` remakes
        them with their own definitions (unique constraints and keys stay)."""
        cur = self.raw.cursor()
        if self.sqlite:
            cur.execute("SELECT name, sql, tbl_name FROM sqlite_master WHERE type='index' "
                        "AND sql IS NOT NULL")
        else:
            cur.execute("SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = "
                        "current_schema() AND i.tablename = ANY(%s) AND NOT EXISTS (SELECT 1 "
                        "FROM pg_constraint c WHERE c.conname = i.indexname)", (tables,))
        rows = [r[:2] for r in cur.fetchall() if not self.sqlite or r[2] in tables]
        for name, sql in rows:
            cur.execute(f'DROP INDEX "{name}"')
            self.dropped.append(sql)
        self.raw.commit()

    def restore_indexes(self) -> None:
        cur = self.raw.cursor()
        for sql in self.dropped:
            cur.execute(sql)
        self.raw.commit()
        self.dropped = []

    def _cols(self, table: str) -> list[str]:
        if table not in self.columns:
            cur = self.raw.cursor()
            if self.sqlite:
                cur.execute(f"PRAGMA table_info({table})")
                self.columns[table] = [r[1] for r in cur.fetchall()]
            else:
                cur.execute("SELECT column_name FROM information_schema.columns WHERE "
                            "table_schema = current_schema() AND table_name = %s "
                            "ORDER BY ordinal_position", (table,))
                self.columns[table] = [r[0] for r in cur.fetchall()]
        return self.columns[table]

    def write(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        if not rows:
            return
        missing = set(columns) - set(self._cols(table))
        if missing:
            raise SystemExit(f"{table} has no column(s) {sorted(missing)}: generator out of date")
        cur = self.raw.cursor()
        names = ", ".join(columns)
        if self.sqlite:
            marks = ", ".join("?" * len(columns))
            # names: the generator's own constants, checked against the table above
            cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})",  # noqa: S608
                            rows)
        else:
            with cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    def commit(self) -> None:
        self.raw.commit()

    def finish(self, tables: list[str]) -> None:
        cur = self.raw.cursor()
        if self.sqlite:
            cur.execute("PRAGMA locking_mode=NORMAL")
            self.raw.commit()
            cur.execute("ANALYZE")
            self.raw.commit()
            cur.execute("PRAGMA journal_mode=WAL")
        else:
            for table in tables:
                cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table,))
                seq = cur.fetchone()[0]
                if seq:
                    cur.execute(f"SELECT setval(%s, COALESCE((SELECT max(id) FROM {table}), "  # noqa: S608
                                "0) + 1, false)", (seq,))
            cur.execute("SET session_replication_role = DEFAULT")
            self.raw.commit()
            driver = self.raw.driver_connection
            driver.autocommit = True
            driver.execute("VACUUM ANALYZE")
            driver.autocommit = False
        self.raw.commit()

    def close(self) -> None:
        self.raw.close()


class Ids:
    """Explicit primary keys: lines and ledger entries refer to rows of the same batch."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def __call__(self, table: str) -> int:
        value = self.counters.get(table, 0) + 1
        self.counters[table] = value
        return value


class Generator:
    def __init__(self, app, customers: int, purchases: int, seed: int) -> None:
        from server.accounts.statements import ON_ACCOUNT
        from server.privacy.consent import texts
        from server.vault.crypto import VaultKeys

        self.app = app
        self.n_customers = customers
        self.n_purchases = purchases
        self.rnd = random.Random(seed)
        self.now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        self.start = self.now - timedelta(days=3 * 365)
        self.ids = Ids()
        self.vault_keys = VaultKeys.load(app.config["VAULT_KEY_FILE"])
        self.consent_version = texts()["current"]
        self.on_account = ON_ACCOUNT
        self.used_customer_ids: set[str] = set()
        self.counts = {}

    # ------------------------------------------------------------------ small helpers
    def uuid(self) -> str:
        """A random (version 4) UUID from the seeded generator: the same data for a seed."""
        h = f"{self.rnd.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def customer_id(self) -> str:
        while True:
            chars = "".join(self.rnd.choices(ALPHABET, k=8))
            cid = f"C-{chars[:4]}-{chars[4:]}"
            if cid not in self.used_customer_ids:
                self.used_customer_ids.add(cid)
                return cid

    def moment(self, after: datetime, before: datetime) -> datetime:
        """A shopping moment in [after, before): seasonal by month, weekday and hour."""
        rnd = self.rnd
        span = (before - after).total_seconds()
        if span <= 3600:
            return after + timedelta(seconds=rnd.random() * max(span, 1))
        for _ in range(20):
            day = after + timedelta(seconds=rnd.random() * span)
            weight = MONTH_WEIGHT[day.month - 1] * WEEKDAY_WEIGHT[day.weekday()]
            if rnd.random() * 2.1 < weight:
                break
        hour = self.hours[bisect.bisect_left(self.hour_cum, rnd.random() * self.hour_cum[-1])]
        # local hours of the shop; Europe is UTC+1/+2: close enough for a UTC timestamp
        moment = day.replace(hour=hour - 1, minute=rnd.randrange(60), second=rnd.randrange(60),
                             microsecond=rnd.randrange(1_000_000))
        if moment < after or moment >= before:
            moment = after + timedelta(seconds=rnd.random() * span)
        return moment

    def any_store(self) -> tuple:
        """A store of the chain, the big ones more often."""
        return self.stores[bisect.bisect_left(self.store_cum,
                                              self.rnd.random() * self.store_cum[-1])]

    # ------------------------------------------------------------------ the chain
    def chain(self, sink: Sink) -> dict:
        from server.devices.auth import hash_key, hash_password, new_device_key

        rnd = self.rnd
        n_stores = max(3, min(40, self.n_customers // 25_000))
        stores, devices, staff = [], [], []
        keys = {"tills": [], "kiosks": []}
        self.stores = []  # (id, code, country, region, weight)
        regions = [r for r in REGIONS for _ in range(r[3])]
        seen: dict[str, int] = {}
        created = ts(self.start - timedelta(days=30))
        for i in range(n_stores):
            country, region, cities, _w = regions[i % len(regions)] if i < len(regions) \
                else rnd.choice(regions)
            city = cities[seen.get(region, 0) % len(cities)]
            seen[region] = seen.get(region, 0) + 1
            number = sum(1 for s in self.stores if s[1].startswith(city + "-")) + 1
            code = f"{city}-{number:02d}"
            store_id = i + 1
            weight = 1.0 / (1 + i) ** 0.6  # a few big shops, many small ones
            self.stores.append((store_id, code, country, region, weight))
            name = f"{city.title()} {number}"
            stores.append((store_id, code, name, False, country, region, created))
        self.store_weights = [s[4] for s in self.stores]
        self.store_cum = list(_accumulate(self.store_weights))
        self.by_region: dict[str, list[int]] = {}
        for s in self.stores:
            self.by_region.setdefault(s[3], []).append(s[0])
        self.tills: dict[int, list[int]] = {}
        self.kiosks: dict[int, int] = {}
        device_id = 0
        for store_id, code, *_ in self.stores:
            for role, count in (("kiosk", 1), ("till", 2)):
                for n in range(count):
                    device_id += 1
                    key, digest = new_device_key()
                    devices.append((device_id, store_id, role, f"{role} {n + 1}", digest,
                                    created))
                    entry = {"id": device_id, "store": code, "key": key}
                    if role == "till":
                        self.tills.setdefault(store_id, []).append(device_id)
                        keys["tills"].append(entry)
                    else:
                        self.kiosks[store_id] = device_id
                        keys["kiosks"].append(entry)
            assert hash_key(key) == digest
        passwords = {}
        for staff_id, (username, role, store) in enumerate(
                (("bench-admin", "admin", None), ("bench-manager", "manager", 1),
                 ("bench-desk", "desk", 1), ("bench-cashier", "cashier", 1)), start=1):
            password = f"{username}-{rnd.getrandbits(64):016x}"
            passwords[username] = password
            staff.append((staff_id, username, hash_password(password), role, store, created))
        self.sellers = {s[0]: [f"{s[1]}-S{k}" for k in range(1, 6)] for s in self.stores}
        sink.write("stores", ("id", "code", "name", "allow_uid_only", "country", "region",
                              "created_at"), stores)
        sink.write("devices", ("id", "store_id", "role", "name", "key_hash", "created_at"),
                   devices)
        sink.write("staff", ("id", "username", "password_hash", "role", "store_id",
                             "created_at"), staff)
        self._products(sink)
        sink.commit()
        return {"devices": keys, "staff": passwords}

    def _products(self, sink: Sink) -> None:
        rnd = self.rnd
        n = max(200, min(5000, self.n_purchases // 2000))
        names = list(CATEGORIES)
        shares = [CATEGORIES[c][3] for c in names]
        rows, self.products = [], []  # (sku, name, category, price, points factor)
        created = ts(self.start)
        for i in range(n):
            category = "drinks" if i == 0 else rnd.choices(names, shares)[0]
            median, sigma, warranty, _share = CATEGORIES[category]
            price = max(50, int(rnd.lognormvariate(math.log(median), sigma)))
            sku = "COFFEE-01" if i == 0 else f"{category[:3].upper()}-{i:05d}"
            name = "Coffee" if i == 0 else f"{category.title()} item {i}"
            factor = 0 if category in EXCLUDED else 2 if category in DOUBLE else 1
            self.products.append((sku, name, category, price, factor, warranty))
            rows.append((i + 1, sku, name, category, warranty, created))
        rnd.shuffle(self.products)  # popularity by rank, whatever the category
        weights = [1.0 / (rank + 1) ** 0.9 for rank in range(n)]
        self.product_cum = list(_accumulate(weights))
        sink.write("products", ("id", "sku", "name", "category", "warranty_months",
                                "updated_at"), rows)

    def purchase_counts(self) -> list[int]:
        """Purchases per customer: a fifth none, the rest log-normal (many one-off buyers, a
        few heavy ones), scaled to the requested total exactly."""
        rnd = self.rnd
        n, total = self.n_customers, self.n_purchases
        weights = [0.0 if rnd.random() < 0.2 else rnd.lognormvariate(0, 1.4) for _ in range(n)]
        scale = total / (sum(weights) or 1)
        counts = []
        for w in weights:
            x = w * scale
            k = int(x)
            counts.append(k + (1 if rnd.random() < x - k else 0))
        diff = total - sum(counts)
        buyers = [i for i, w in enumerate(weights) if w > 0] or list(range(n))
        while diff:
            i = rnd.choice(buyers)
            if diff > 0:
                counts[i] += 1
                diff -= 1
            elif counts[i] > 0:
                counts[i] -= 1
                diff += 1
        return counts

    # ------------------------------------------------------------------ customers
    def run(self, sink: Sink, vault_sink: Sink) -> None:
        from server.cards.keys import load_keyring

        self.card_key_id, _ = load_keyring(self.app.config["CARD_KEYS_FILE"]).signing_key()
        self.hours = list(HOUR_WEIGHT)
        self.hour_cum = list(_accumulate(HOUR_WEIGHT.values()))
        counts = self.purchase_counts()
        t0 = time.monotonic()
        done = 0
        for first in range(0, self.n_customers, CHUNK):
            batch = Batch()
            for i in range(first, min(first + CHUNK, self.n_customers)):
                self.customer(batch, counts[i])
            batch.write(sink, vault_sink)
            done = min(first + CHUNK, self.n_customers)
            rate = done / max(time.monotonic() - t0, 1e-6)
            print(f"  {done:,}/{self.n_customers:,} customers ({rate:,.0f}/s)",
                  file=sys.stderr, flush=True)
        self.anonymous_sales(sink)
        sink.commit()

    def customer(self, b: Batch, n_purchases: int) -> None:
        rnd = self.rnd
        now = self.now
        store = self.any_store()
        store_id, _code, country, region = store[0], store[1], store[2], store[3]
        language = (("fr" if rnd.random() < 0.9 else "en") if country == "FR"
                    else ("lt" if rnd.random() < 0.85 else "en"))
        # heavier buyers joined earlier, on the whole
        age_days = 3 * 365 * (rnd.random() ** (0.5 if n_purchases > 20 else 1.0))
        created = now - timedelta(days=age_days, seconds=rnd.randrange(86400))
        cid = self.customer_id()
        kiosk = self.kiosks[store_id]
        profiling = rnd.random() < 0.4
        sex = rnd.choice(("female", "male", "female", "male", "other")) if rnd.random() < 0.9 \
            else None
        birth = date(now.year - rnd.randint(16, 85), rnd.randint(1, 12), rnd.randint(1, 28))
        band = _age_band(birth, now.date()) if profiling else None

        # ----- consents: the four first decisions at the kiosk, a few withdrawn later
        decisions = {"terms": True, "marketing_email": rnd.random() < 0.45,
                     "marketing_sms": rnd.random() < 0.25, "profiling": profiling}
        for purpose, granted in decisions.items():
            b.consents.append((self.ids("consents"), cid, purpose, granted,
                               self.consent_version, language, CONSENT_CHANNEL, kiosk,
                               ts(created)))
        if decisions["marketing_email"] and rnd.random() < 0.05:
            b.consents.append((self.ids("consents"), cid, "marketing_email", False,
                               self.consent_version, language, "backoffice", None,
                               ts(self.moment(created, now))))
        if rnd.random() < 0.3:
            b.surveys.append((self.ids("survey_responses"), cid, json.dumps(
                {"heard_from": rnd.choice(["friend", "shop", "web", "other"]),
                 "visits_per_month": rnd.choice(["1", "2-4", "5+"])}), ts(created)))

        # ----- vault: encrypted personal data with the project's own code
        first = rnd.choice(FIRST[language])
        last = rnd.choice(LAST[language])
        serial = len(self.used_customer_ids)
        phone = (f"+336{rnd.randrange(10**8):08d}" if country == "FR"
                 else f"+3706{rnd.randrange(10**7):07d}")
        personal = {
            "first_name": first, "last_name": last,
            "email": f"{_ascii(first)}.{_ascii(last)}.{serial}@example.org".lower()
            if rnd.random() < 0.85 else None,
            "phone": phone if rnd.random() < 0.6 else None,
            "birth_date": birth.isoformat(),
            "gender": sex,
            "address": f"{rnd.randint(1, 180)} {rnd.choice(STREETS[country])}, {region}"
            if rnd.random() < 0.5 else None,
        }
        b.vault.append(self.vault_row(cid, personal, country, created))

        # ----- cards: one active; some customers lost or broke one before (revoked)
        cards = []  # (card_id, valid_from)
        r = rnd.random()
        n_cards = 1 if r < 0.9 else 2 if r < 0.98 else 3
        moments = sorted(self.moment(created, now) for _ in range(n_cards - 1))
        issued = created
        for generation in range(n_cards):
            card_id = f"{rnd.getrandbits(64):016x}"
            kind = "nfc" if rnd.random() < 0.45 else "qr"
            uid = f"04{rnd.getrandbits(48):012X}" if kind == "nfc" else None
            active = generation == n_cards - 1
            revoked = None if active else moments[generation]
            status = "active" if active else "revoked"
            reason = None if active else rnd.choice(("lost", "lost", "damaged", "stolen"))
            staff = None if generation == 0 else 3  # bench-desk reissues
            b.cards.append([card_id, cid, kind, generation, self.card_key_id, status, reason,
                            uid, self.uuid(), kiosk, staff, ts(issued),
                            ts(revoked) if revoked else None, None, False, None])
            if b.cards and generation:
                b.cards[-2][13] = card_id  # replaced_by
            cards.append((card_id, issued))
            if revoked:
                issued = revoked
        if rnd.random() < 0.01:  # an NFC card issued but never written (void)
            b.cards.append([f"{rnd.getrandbits(64):016x}", cid, "nfc", n_cards,
                            self.card_key_id, "void", "superseded", None, self.uuid(), kiosk,
                            None, ts(created), ts(created), None, False, None])

        # ----- purchases, visits, points, in time order
        home_share = rnd.choice((0.95, 0.85, 0.7, 0.5))
        region_stores = self.by_region[region]
        account = n_purchases >= 4 and rnd.random() < 0.02
        times = sorted(self.moment(created, now) for _ in range(n_purchases))
        # taps without a purchase: about one for every four purchases
        extra = sorted(self.moment(created, now) for _ in range(int(n_purchases * 0.25
                                                                    + rnd.random())))
        events = [(t, True) for t in times] + [(t, False) for t in extra]
        events.sort()
        points = 0
        ledger = b.ledger
        ledger.append((self.ids("points_ledger"), cid, 50, "welcome", "welcome bonus",
                       ts(created), ts(_expiry(created)), store_id, None, None, None, None,
                       kiosk, None, None))
        points += 50
        qualifying_since = now - timedelta(days=365)
        qualifying = 0
        last_counted = None
        charged = []  # (paid_at, total) on account
        for at, bought in events:
            if rnd.random() < home_share:
                where = store_id
            elif rnd.random() < 0.7 and len(region_stores) > 1:
                where = rnd.choice(region_stores)
            else:
                where = self.any_store()[0]
            till = rnd.choice(self.tills[where])
            card_id = cards[0][0]
            for cand, since in cards:
                if since <= at:
                    card_id = cand
            # the visit (a tap), for most purchases and every extra tap
            if not bought or rnd.random() < 0.85:
                visit_id = self.ids("visits")
                method = "url" if rnd.random() < 0.6 else "qr"
                b.visits.append((visit_id, self.uuid(), cid, card_id, where, till, None,
                                 method, False, ts(at), ts(at)))
                if last_counted is None or at - last_counted >= timedelta(hours=20):
                    last_counted = at
                    points += 5
                    if at >= qualifying_since:
                        qualifying += 5
                    ledger.append((self.ids("points_ledger"), cid, 5, "visit", "visit", ts(at),
                                   ts(_expiry(at)), where, None, None, None, visit_id, till,
                                   None, None))
            if not bought:
                continue
            pid = self.ids("purchases")
            total = earned = 0
            lines = []
            for line_no in range(1, 2 + min(int(rnd.expovariate(0.8)), 25)):
                sku, name, category, price, factor, warranty = self.products[
                    bisect.bisect_left(self.product_cum, rnd.random() * self.product_cum[-1])]
                qty = 1000 if rnd.random() < 0.85 else rnd.choice((2000, 3000, 500))
                unit = price
                gross = unit * qty // 1000
                discount = gross // 10 if rnd.random() < 0.08 else 0
                net = gross - discount
                pts = (net // 100) * factor
                line_id = self.ids("purchase_lines")
                lines.append([line_id, pid, line_no, sku, name, category, qty, unit, discount,
                              net, None, pts, None, 0, 0])
                total += net
                earned += pts
            paid_on_account = account and rnd.random() < 0.6
            receipt = f"R{pid:09d}"
            b.purchases.append((pid, self.uuid(), cid, card_id, where, till, f"till-{till}",
                                rnd.choice(self.sellers[where]), receipt, "EUR", total, earned,
                                self.on_account if paid_on_account else None, ts(at), ts(at)))
            b.lines.extend(lines)
            if paid_on_account:
                charged.append((at, total))
            if earned:
                points += earned
                if at >= qualifying_since:
                    qualifying += earned
                ledger.append((self.ids("points_ledger"), cid, earned, "earn", None, ts(at),
                               ts(_expiry(at)), where, pid, None, None, None, till, None,
                               None))
            # a few returns: one line, whole quantity, days later
            if rnd.random() < 0.02:
                line = rnd.choice(lines)
                back = min(at + timedelta(days=rnd.randint(0, 20), hours=rnd.randint(0, 8)),
                           now - timedelta(minutes=5))
                reversed_pts = line[11]
                if reversed_pts <= points and back > at:
                    refund_id = self.ids("refunds")
                    b.refunds.append((refund_id, self.uuid(), pid, till, line[9], reversed_pts,
                                      0, 0, ts(back)))
                    b.refund_lines.append((self.ids("refund_lines"), refund_id, line[0],
                                           line[6], line[9], reversed_pts))
                    line[13], line[14] = line[6], reversed_pts
                    if paid_on_account:
                        charged.append((back, -line[9]))
                    if reversed_pts:
                        points -= reversed_pts
                        if back >= qualifying_since:
                            qualifying -= reversed_pts
                        ledger.append((self.ids("points_ledger"), cid, -reversed_pts, "refund",
                                       "return", ts(back), ts(_expiry(at)), where, pid,
                                       refund_id, None, None, till, None, None))
            # a reward now and then, when there are points enough
            if points >= 500 and rnd.random() < 0.15:
                code, cost = ("VOUCHER-5", 500) if rnd.random() < 0.6 else ("COFFEE", 150)
                redemption_id = self.ids("redemptions")
                b.redemptions.append((redemption_id, self.uuid(), cid, code, 1, cost, where,
                                      till, None, "active", ts(at)))
                points -= cost
                ledger.append((self.ids("points_ledger"), cid, -cost, "redeem", code, ts(at),
                               None, where, None, None, redemption_id, None, till, None, None))
            # tickets: a warranty claim on a product with a warranty, or a support issue
            if rnd.random() < 0.006:
                warranty_lines = [ln for ln in lines if self._warranty(ln[3])]
                line = warranty_lines[0] if warranty_lines else None
                self.ticket(b, cid, where, at, line)

        tier = "gold" if qualifying >= 2000 else "silver" if qualifying >= 500 else "member"
        review = ts(now + timedelta(days=rnd.randint(1, 365))) if tier != "member" else None
        b.customers.append((cid, language, store_id, kiosk, self.uuid(), tier, review, points,
                            0, ts(last_counted) if last_counted else None, None, 0,
                            sex if profiling else None, band, ts(created), None, None))
        if account:
            self.account(b, cid, created, charged)

    def _warranty(self, sku: str) -> int:
        if not hasattr(self, "_warranties"):
            self._warranties = {p[0]: p[5] for p in self.products}
        return self._warranties[sku]

    def ticket(self, b: Batch, cid: str, store_id: int, at: datetime, line) -> None:
        rnd = self.rnd
        opened = min(at + timedelta(days=rnd.randint(1, 200)), self.now - timedelta(hours=1))
        if opened <= at:
            return
        kind = "warranty" if line else rnd.choice(("support", "complaint"))
        age = (self.now - opened).days
        status = (rnd.choice(("open", "in-progress", "waiting")) if age < 30
                  and rnd.random() < 0.7 else rnd.choice(("resolved", "closed", "closed")))
        ticket_id = self.ids("tickets")
        warranty_end = None
        if line:
            months = self._warranty(line[3])
            warranty_end = _add_months(at.date(), months).isoformat()
        closed = ts(opened + timedelta(days=rnd.randint(1, 20))) if status == "closed" else None
        subject = (f"Warranty: {line[4]}" if line else
                   "Question about points" if kind == "support" else "Queue at the till")
        b.tickets.append((ticket_id, cid, kind, status, subject, line[0] if line else None,
                          line[3] if line else None, line[4] if line else None, None,
                          at.date().isoformat() if line else None, warranty_end, store_id, None,
                          (opened + timedelta(days=14)).date().isoformat(), "bench-desk",
                          ts(opened), ts(opened), closed))
        b.notes.append((self.ids("ticket_notes"), ticket_id, "note", "bench-desk", ts(opened),
                        "Opened at the desk.", None, None))

    def account(self, b: Batch, cid: str, created: datetime, charged: list) -> None:
        """An account customer: the account, and payments of each month's purchases."""
        rnd = self.rnd
        b.accounts.append((cid, rnd.choice((50_000, 100_000, 250_000, 500_000)), 30,
                           ts(created), "bench-manager", None))
        by_month: dict[tuple[int, int], int] = {}
        for at, amount in charged:
            by_month[(at.year, at.month)] = by_month.get((at.year, at.month), 0) + amount
        for (year, month), amount in sorted(by_month.items()):
            if amount <= 0:
                continue
            paid = datetime(year, month, 1) + timedelta(days=31 + rnd.randint(5, 40))
            if paid >= self.now:
                continue
            if rnd.random() < 0.1:
                amount = amount // 2  # a partial payment
            b.payments.append((self.ids("account_payments"), self.uuid(), cid, amount,
                               rnd.choice(("transfer", "card", "cash")), f"PAY-{year}{month:02d}",
                               ts(paid), None, 2, "bench-manager", ts(paid)))

    def vault_row(self, cid: str, personal: dict, country: str, created: datetime) -> tuple:
        from server.vault.crypto import encrypt_record
        from server.vault.service import index_columns

        kid, wrapped, ciphertext = encrypt_record(self.vault_keys, cid, personal)
        idx = index_columns(self.vault_keys, personal, country)
        return (cid, kid, wrapped, ciphertext, idx["email_index"], idx["phone_index"],
                idx["last_name_index"], idx["full_name_index"], ts(created), ts(created))

    def anonymous_sales(self, sink: Sink) -> None:
        """A year of each till's daily sales without a card (the share of card holders)."""
        rnd = self.rnd
        rows = []
        today = self.now.date()
        scale = max(1, self.n_purchases // (len(self.stores) * 365 * 20))
        for store_id, *_ in self.stores:
            for till in self.tills[store_id]:
                for d in range(365):
                    day = today - timedelta(days=d + 1)
                    baskets = int(rnd.randint(5, 30) * scale * WEEKDAY_WEIGHT[day.weekday()])
                    rows.append((self.ids("anonymous_sales"), till, store_id, day.isoformat(), "",
                                 baskets, baskets * rnd.randint(800, 3000), "EUR",
                                 ts(datetime.combine(day, datetime.min.time())
                                    + timedelta(hours=20))))
        sink.write("anonymous_sales", ("id", "device_id", "store_id", "day", "seller", "baskets",
                                       "total_cents", "currency", "reported_at"), rows)


class Batch:
    """The rows of a chunk of customers, written table by table in foreign-key order."""

    def __init__(self) -> None:
        for name in ("customers", "consents", "surveys", "vault", "cards", "visits", "purchases",
                     "lines", "refunds", "refund_lines", "redemptions", "ledger", "tickets",
                     "notes", "accounts", "payments"):
            setattr(self, name, [])

    def write(self, sink: Sink, vault: Sink) -> None:
        sink.write("customers", (
            "id", "language", "home_store_id", "enrolled_by_device_id", "enrol_event_id", "tier",
            "tier_review_at", "points", "points_debt", "last_counted_visit_at", "pin_hash",
            "pin_failures", "sex", "age_band", "created_at", "erased_at", "retention_notice_at"),
            self.customers)
        sink.write("consents", ("id", "customer_id", "purpose", "granted", "text_version",
                                "language", "channel", "device_id", "recorded_at"),
                   self.consents)
        sink.write("survey_responses", ("id", "customer_id", "answers", "recorded_at"),
                   self.surveys)
        sink.write("cards", (
            "id", "customer_id", "kind", "generation", "key_id", "status", "status_reason",
            "nfc_uid", "issue_event_id", "issued_by_device_id", "issued_by_staff_id",
            "issued_at", "revoked_at", "replaced_by", "sun", "sun_counter"),
            [tuple(c) for c in self.cards])
        sink.write("visits", ("id", "event_id", "customer_id", "card_id", "store_id",
                              "device_id", "reader", "method", "weak", "tapped_at",
                              "recorded_at"), self.visits)
        sink.write("purchases", (
            "id", "event_id", "customer_id", "card_id", "store_id", "device_id", "till",
            "seller", "receipt", "currency", "total_cents", "points_earned", "payment",
            "paid_at", "recorded_at"), self.purchases)
        sink.write("redemptions", ("id", "event_id", "customer_id", "reward_code", "quantity",
                                   "points", "store_id", "device_id", "confirmed_by_staff_id",
                                   "status", "created_at"), self.redemptions)
        sink.write("purchase_lines", (
            "id", "purchase_id", "line_no", "sku", "name", "category", "quantity_milli",
            "unit_price_cents", "discount_cents", "net_cents", "redemption_id",
            "points_earned", "reasons", "refunded_milli", "points_reversed"),
            [tuple(ln) for ln in self.lines])
        sink.write("refunds", ("id", "event_id", "purchase_id", "device_id", "amount_cents",
                               "points_reversed", "points_restored", "shortfall",
                               "recorded_at"), self.refunds)
        sink.write("refund_lines", ("id", "refund_id", "line_id", "quantity_milli",
                                    "amount_cents", "points_reversed"), self.refund_lines)
        sink.write("points_ledger", (
            "id", "customer_id", "delta", "kind", "reason", "at", "expires_at", "store_id",
            "purchase_id", "refund_id", "redemption_id", "visit_id", "device_id", "staff_id",
            "event_id"), self.ledger)
        sink.write("tickets", (
            "id", "customer_id", "kind", "status", "subject", "purchase_line_id", "sku",
            "product_name", "serial_number", "purchase_date", "warranty_end", "store_id",
            "assignee_staff_id", "due_date", "created_by", "created_at", "updated_at",
            "closed_at"), self.tickets)
        sink.write("ticket_notes", ("id", "ticket_id", "kind", "author", "at", "text",
                                    "old_value", "new_value"), self.notes)
        sink.write("accounts", ("customer_id", "credit_limit_cents", "terms_days", "opened_at",
                                "opened_by", "closed_at"), self.accounts)
        sink.write("account_payments", (
            "id", "event_id", "customer_id", "amount_cents", "method", "reference", "paid_at",
            "device_id", "staff_id", "recorded_by", "recorded_at"), self.payments)
        vault.write("vault_records", (
            "customer_id", "master_key_id", "wrapped_key", "ciphertext", "email_index",
            "phone_index", "last_name_index", "full_name_index", "created_at", "updated_at"),
            self.vault)
        vault.commit()
        sink.commit()


BULK = ["customers", "consents", "survey_responses", "cards", "visits", "purchases",
        "redemptions", "purchase_lines", "refunds", "refund_lines", "points_ledger", "tickets",
        "ticket_notes", "accounts", "account_payments", "anonymous_sales"]
IDS = ["stores", "devices", "staff", "products", "consents", "survey_responses", "visits",
       "purchases", "redemptions", "purchase_lines", "refunds", "refund_lines", "points_ledger",
       "tickets", "ticket_notes", "account_payments", "anonymous_sales", "statements"]


def _accumulate(values):
    total = 0.0
    for v in values:
        total += v
        yield total


def _ascii(text: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", text) if c.isascii())


def _age_band(birth: date, today: date) -> str:
    age = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    for upper, band in AGE_BANDS:
        if age < upper:
            return band
    return "65+"


def _expiry(at: datetime) -> datetime:
    """The default programme's expiry: 24 months after the points were earned."""
    return at + timedelta(days=730)


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year = day.year + month // 12
    return date(year, month % 12 + 1, min(day.day, 28))


def statements(app, months: int = 3) -> int:
    """Build the last ``months`` statements of every account customer with the project's
    own ``build_statement`` (marked sent: a benchmark database mails nobody)."""
    from sqlalchemy.orm import Session

    from server.accounts.statements import bounds, build_statement, candidates, previous_month
    from server.loyalty.programme import default_programme

    programme = default_programme()
    zone = programme.zone
    made = 0
    month = previous_month(datetime.now(UTC), zone)
    with app.app_context(), Session(app.extensions["loyalty.db"].main) as main:
        for _ in range(months):
            start, end, _last = bounds(month, zone)
            for cid in candidates(main, start, end):
                statement = build_statement(main, cid, month, zone, programme.currency)
                statement.sent_at = statement.created_at = end
                main.add(statement)
                made += 1
            main.commit()
            year, mon = int(month[:4]), int(month[5:])
            month = f"{year - (mon == 1)}-{(mon - 2) % 12 + 1:02d}"
    return made


def sales_days(app) -> int:
    """Rebuild the report aggregates with the project's own ``rebuild`` (``flask reports
    rebuild``): the load ran with ``session_replication_role = replica``, which skips their
    triggers too. Returns the rows of ``sales_days``."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from server.reports.aggregates import TABLES, rebuild

    with app.app_context(), Session(app.extensions["loyalty.db"].main) as main:
        rows = rebuild(main)
        main.commit()
        for table in TABLES:
            main.execute(text(f"ANALYZE {table}"))
        main.commit()
    return rows


def generate(database_url: str, vault_url: str, customers: int, purchases: int, seed: int,
             instance: str) -> dict:
    """Migrate empty databases and fill them; returns what ``bench.json`` holds."""
    from sqlalchemy import inspect

    from server import create_app
    from server.migrate import upgrade

    app = create_app({"DATABASE_URL": database_url, "VAULT_URL": vault_url,
                      "INSTANCE_PATH": instance, "LOG_LEVEL": "WARNING"})
    dbs = app.extensions["loyalty.db"]
    if "customers" in inspect(dbs.main).get_table_names():
        from sqlalchemy import text

        with dbs.main.connect() as conn:
            if conn.execute(text("SELECT count(*) FROM customers")).scalar():
                raise SystemExit("the main database already has customers: give empty ones")
    t0 = time.monotonic()
    upgrade(app)
    gen = Generator(app, customers, purchases, seed)
    sink, vault_sink = Sink(dbs.main), Sink(dbs.vault)
    secrets = gen.chain(sink)
    sink.drop_indexes(BULK)
    vault_sink.drop_indexes(["vault_records"])
    gen.run(sink, vault_sink)
    print("  indexes ...", file=sys.stderr, flush=True)
    sink.restore_indexes()
    vault_sink.restore_indexes()
    sink.finish(IDS)
    vault_sink.finish([])
    sink.close()
    vault_sink.close()
    dbs.dispose()
    made = statements(app)
    if dbs.main.dialect.name == "postgresql":
        print("  report aggregates ...", file=sys.stderr, flush=True)
        sales_days(app)
    dbs.dispose()
    info = {"customers": customers, "purchases": purchases, "seed": seed,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - t0, 1), "statements": made,
            "rows": dict(gen.ids.counters), **secrets}
    path = Path(app.config["INSTANCE_PATH"]) / "bench.json"
    path.write_text(json.dumps(info, indent=1))
    os.chmod(path, 0o600)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--vault-url", required=True)
    parser.add_argument("--customers", type=int, required=True)
    parser.add_argument("--purchases", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--instance", default=os.environ.get("LOYALTY_INSTANCE_PATH",
                                                             "instance"),
                        help="folder of the key files and bench.json (default: "
                             "$LOYALTY_INSTANCE_PATH or ./instance)")
    args = parser.parse_args(argv)
    if args.customers < 1 or args.purchases < 0:
        parser.error("--customers must be at least 1 and --purchases at least 0")
    info = generate(args.database_url, args.vault_url, args.customers, args.purchases,
                    args.seed, args.instance)
    print(f"generated {args.customers:,} customers, {args.purchases:,} purchases in "
          f"{info['seconds']} s; keys in {Path(args.instance) / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

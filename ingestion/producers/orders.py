"""Simulated commerce orders, as an outbox relay would publish them.

Each order is created PENDING and moves through the nine statuses of the order spec:

    PENDING -> CONFIRMED -> PROCESSING -> SHIPPED -> DELIVERED -> COMPLETED
       |           |             |                       |
       +-> FAILED  +-> CANCELLED +-> CANCELLED            +-> REFUNDED
       +-> CANCELLED

Every change carries `version` = the change's epoch milliseconds, strictly increasing per
order. An admin may soft-delete an order (`order.deleted`, the spec's OrderDeleted, with
`deleted_by` and a version above every earlier one); nothing happens to it afterwards.
The relay publishes in batches, so some events reach Kafka after a newer version of the
same order (`out_of_order_rate`): the warehouse must pick the latest state by version, not
by arrival. Orders still open when the simulated period ends stay open.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ingestion.contract import ORDER_STATUSES, format_ts, make_event
from ingestion.producers.delivery import DeliveryQueue, ProduceSummary, derived_event_id

# status -> [(next status, probability, typical hours until it happens)]
TRANSITIONS: dict[str, list[tuple[str, float, float]]] = {
    "PENDING": [("CONFIRMED", 0.88, 0.2), ("FAILED", 0.06, 0.1), ("CANCELLED", 0.06, 1.0)],
    "CONFIRMED": [("PROCESSING", 0.95, 2.0), ("CANCELLED", 0.05, 3.0)],
    "PROCESSING": [("SHIPPED", 0.97, 12.0), ("CANCELLED", 0.03, 4.0)],
    "SHIPPED": [("DELIVERED", 1.0, 40.0)],
    "DELIVERED": [("COMPLETED", 0.9, 48.0), ("REFUNDED", 0.1, 72.0)],
}
TERMINAL = frozenset(set(ORDER_STATUSES) - set(TRANSITIONS))
MAX_RELAY_DELAY = timedelta(minutes=30)
ADMINS = ("admin_001", "admin_002", "admin_007")


@dataclass(frozen=True)
class OrdersConfig:
    orders: int = 500
    users: int = 120
    products: int = 40
    days: int = 7
    start: date = date(2026, 11, 1)
    seed: int = 11
    delete_rate: float = 0.03
    out_of_order_rate: float = 0.05
    duplicate_rate: float = 0.0

    def __post_init__(self) -> None:
        if min(self.orders, self.users, self.products, self.days) < 1:
            raise ValueError("orders, users, products and days must be at least 1")
        for name in ("delete_rate", "out_of_order_rate", "duplicate_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")


def _draw_prices(rng: random.Random, products: int) -> dict[str, int]:
    return {f"prod_{n:04d}": rng.choice((990, 1490, 2990, 4990, 9990, 19990)) for n in range(1, products + 1)}


def product_prices(config: OrdersConfig) -> dict[str, int]:
    """The catalogue's price per product id, as the simulator prices every order's items (the
    seed's first draws), for whoever creates the products (the outbox writer, oltp/outbox_writer.py)."""
    return _draw_prices(random.Random(config.seed), config.products)


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class _OrderSimulation:
    def __init__(self, config: OrdersConfig, summary: ProduceSummary):
        self.config = config
        self.summary = summary
        self.rng = random.Random(config.seed)
        self.queue = DeliveryQueue()
        self.origin = datetime(config.start.year, config.start.month, config.start.day, tzinfo=UTC)
        self.end = self.origin + timedelta(days=config.days)
        self.prices = _draw_prices(self.rng, config.products)
        self.sequence = 0

    def _emit(self, event_type: str, at: datetime, user_id: str, payload: dict[str, Any]) -> None:
        rng = self.rng
        self.sequence += 1
        event = make_event(
            event_type,
            derived_event_id(self.config.seed, user_id, self.sequence, event_type, at, payload),
            at,
            payload,
            user_id=user_id,
            service="order-outbox-relay",
            host="relay-1",
            sequence=self.sequence,
            dedupe_key=f"{event_type}:{payload['order_id']}:{payload['version']}",
        )
        published = at + timedelta(seconds=rng.uniform(1, 10))  # the relay polls every 5 s
        if rng.random() < self.config.out_of_order_rate:  # stuck in a failed relay batch, retried later
            published = at + timedelta(seconds=rng.uniform(60, MAX_RELAY_DELAY.total_seconds()))
            self.summary.late_events += 1
        self.queue.push(published, event)
        if self.config.duplicate_rate and rng.random() < self.config.duplicate_rate:
            self.queue.push(published + timedelta(seconds=rng.uniform(1, 20)), dict(event))
            self.summary.duplicates_injected += 1

    def order(self, number: int, created: datetime) -> None:
        rng = self.rng
        order_id = f"ord_{number:07d}"
        user_id = f"customer_{rng.randint(1, self.config.users):05d}"
        products = rng.sample(sorted(self.prices), k=min(rng.randint(1, 4), len(self.prices)))
        items = [{"product_id": p, "quantity": rng.randint(1, 3), "price_cents": self.prices[p]} for p in products]
        amount = sum(i["quantity"] * i["price_cents"] for i in items)
        version = _epoch_ms(created)
        created_payload = {
            "order_id": order_id,
            "status": "PENDING",
            "version": version,
            "amount_cents": amount,
            "items": items,
            "product_ids": products,
        }
        self._emit("order.created", created, user_id, created_payload)
        status, at = "PENDING", created
        deletes_at = None
        if rng.random() < self.config.delete_rate:
            deletes_at = created + timedelta(hours=rng.uniform(0.5, 96))
        while status not in TERMINAL:
            options = TRANSITIONS[status]
            pick = rng.choices(options, weights=[p for _, p, _ in options])[0]
            next_at = at + timedelta(hours=rng.expovariate(1 / pick[2]))
            if next_at >= self.end or (deletes_at is not None and next_at >= deletes_at):
                break
            previous, status, at = status, pick[0], next_at
            version = max(version + 1, _epoch_ms(at))
            payload = {"order_id": order_id, "status": status, "version": version, "previous_status": previous}
            if status in ("CANCELLED", "REFUNDED", "FAILED"):
                payload["amount_cents"] = amount
            self._emit("order.status_changed", at, user_id, payload)
        if deletes_at is not None and deletes_at < self.end:
            version = max(version + 1, _epoch_ms(deletes_at))
            payload = {
                "order_id": order_id,
                "version": version,
                "deleted_by": rng.choice(ADMINS),
                "deleted_at": format_ts(deletes_at),
            }
            self._emit("order.deleted", deletes_at, user_id, payload)
            self.summary.extra["deleted_orders"] = self.summary.extra.get("deleted_orders", 0) + 1


def simulate_orders(config: OrdersConfig, summary: ProduceSummary | None = None) -> Iterator[dict[str, Any]]:
    """Order events in the order the relay published them."""
    summary = summary if summary is not None else ProduceSummary()
    summary.extra.setdefault("deleted_orders", 0)
    sim = _OrderSimulation(config, summary)
    rng = sim.rng
    period = (sim.end - sim.origin).total_seconds()
    created = sorted(sim.origin + timedelta(seconds=rng.uniform(0, period * 0.95)) for _ in range(config.orders))
    for number, at in enumerate(created, start=1):
        sim.order(number, at)
        # Orders are created in time order: nothing later can be published before this one was.
        yield from sim.queue.release(before=at)
    yield from sim.queue.release()
    summary.extra["orders"] = config.orders

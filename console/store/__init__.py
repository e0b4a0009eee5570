"""The durable SQLite history: `Store` (writes, group commit), `queries`, `export`."""

from console.store.db import DeliveryReceipt, DeliveryRecord, Store, StoreClosed, StoreError

__all__ = ["DeliveryReceipt", "DeliveryRecord", "Store", "StoreClosed", "StoreError"]

"""The backup's on-disk layout: safe names, staging journal, streaming merge, metadata, lock.

Knows nothing of HTTP or Scrapy; the pipeline hands it what the spiders fetched.
"""

from .backup import BackupOwnerMismatch, BackupStore, BackupView, CollectionRun, HeldState
from .jsonarray import CorruptCollectionError
from .lock import BackupLocked
from .names import safe_dir_name
from .timestamps import to_epoch

__all__ = [
    "BackupLocked",
    "BackupOwnerMismatch",
    "BackupStore",
    "BackupView",
    "CollectionRun",
    "CorruptCollectionError",
    "HeldState",
    "safe_dir_name",
    "to_epoch",
]

"""Where the trials are stored: Optuna storages opened, kept alive, read and written.

- :mod:`~dropsweep.storage.urls`: what ``--storage`` names as a URL (a plain path is SQLite),
  passwords masked, a bad URL or a missing driver refused in one line naming the fix.
- :mod:`~dropsweep.storage.open`: opening a storage (SQLite tuned, read-only readers that never
  create anything), loading a study, the heartbeat setting.
- :mod:`~dropsweep.storage.faults`: which failures are transient, how long they are retried,
  the real cause in one line.
- :mod:`~dropsweep.storage.rdb`: ``ResilientRDBStorage``, Optuna's RDB storage riding out
  transient failures, and its batched writes in raw SQL.
- :mod:`~dropsweep.storage.trialio`, :mod:`~dropsweep.storage.read`,
  :mod:`~dropsweep.storage.results`: a worker's reads and writes of its trials, the fast
  reader, a batch's results recorded.
- :mod:`~dropsweep.storage.optuna_private`: every use of Optuna's private API.

The names most used elsewhere are re-exported here; the package's own modules import them from
their homes.
"""

from dropsweep.storage.open import GRACE_BEATS, heartbeat_seconds
from dropsweep.storage.urls import mask_url, sqlite_path

__all__ = ["GRACE_BEATS", "heartbeat_seconds", "mask_url", "sqlite_path"]

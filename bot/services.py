"""The wired subsystems of one process: settings, database, coordination, ingest."""

from __future__ import annotations

from functools import cached_property

from bot.config import Settings
from bot.coordination import Coordinator, make_coordinator
from bot.db import Database
from bot.ingest import Ingestor
from bot.wecom.client import WeComClient


class Services:
    """Shared by the web app, workers and commands of one process; tests may inject parts."""

    def __init__(
        self, settings: Settings, db: Database | None = None, coordinator: Coordinator | None = None
    ) -> None:
        self.settings = settings
        self.db = db or Database(settings.database)
        self.coordinator = coordinator or make_coordinator(settings.redis.url, settings.redis.namespace)

    @cached_property
    def ingestor(self) -> Ingestor | None:
        """The callback ingestor, or None while the WeCom callback settings are incomplete."""
        if self.settings.check_wecom():
            return None
        return Ingestor(self.settings, self.db, self.coordinator)

    @cached_property
    def client(self) -> WeComClient:
        """The WeCom API client, sharing tokens and rate limits through the coordinator."""
        return WeComClient.from_settings(self.settings.wecom, self.coordinator)

    def close(self) -> None:
        """Release database and Redis connections."""
        if "client" in self.__dict__:
            self.client.close()
        self.coordinator.close()
        self.db.dispose()

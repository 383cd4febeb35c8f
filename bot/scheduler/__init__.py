"""Campaign scheduling: occurrences, leader election across replicas, and the scheduler service."""

from bot.scheduler.leader import Leadership
from bot.scheduler.service import FireResult, NotLeader, ReconcileReport, SchedulerService, default_planner

__all__ = ["FireResult", "Leadership", "NotLeader", "ReconcileReport", "SchedulerService", "default_planner"]

"""Wire the listener together from settings: database, spool, assembler, dispatch, SCP."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from db.engine import make_engine, make_session_factory
from db.migrate import upgrade_to_head
from listener.assembly import CompletionPolicy, StudyAssembler
from listener.handlers import StoreContext
from listener.ingest import InstanceRecorder
from listener.recovery import recover_spool
from listener.routing import RoutingRule
from listener.scp import RunningSCP, start_scp
from listener.spool import Quarantine, Spool
from triage.queue import Dispatcher, StudyQueue, make_celery
from triage.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ListenerService:
    """A running listener: stop it to close the port and the completion ticker."""

    scp: RunningSCP
    assembler: StudyAssembler

    @property
    def port(self) -> int:
        return self.scp.port

    def stop(self) -> None:
        self.scp.stop()
        self.assembler.stop()


def start_listener(
    settings: Settings, *, dispatcher: Dispatcher | None = None, port: int | None = None
) -> ListenerService:
    """Migrate the database, resume incomplete studies and start serving."""
    upgrade_to_head(settings.database.url.get_secret_value())
    # The durable record of an instance is its fsynced spool file: a row lost to a power
    # cut before SQLite flushed it is rebuilt from the file by recover_spool at start-up,
    # so the listener's SQLite commits need not wait for the disk (WAL, synchronous=NORMAL).
    engine = make_engine(settings.database.url.get_secret_value(), durable=False)
    sessions = make_session_factory(engine)
    if dispatcher is None:
        dispatcher = StudyQueue(make_celery(settings))
    assembler = StudyAssembler(
        sessions,
        CompletionPolicy(
            settings.completion.stable_seconds,
            settings.completion.quiet_seconds,
            settings.completion.expected_instances,
        ),
        RoutingRule.from_lists(
            settings.routing.modalities,
            settings.routing.body_parts,
            settings.routing.description_pattern,
        ),
        dispatcher,
    )
    spool = Spool(settings.spool.dir, fsync=settings.spool.fsync)
    recorder = InstanceRecorder(sessions)
    if settings.spool.recovery_hours > 0:
        recover_spool(
            spool, recorder, sessions, window_seconds=settings.spool.recovery_hours * 3600
        )
    assembler.resume()
    assembler.start()
    ctx = StoreContext(
        spool=spool,
        quarantine=Quarantine(settings.spool.quarantine_dir),
        recorder=recorder,
        assembler=assembler,
        sessions=sessions,
    )
    scp = start_scp(settings, ctx, port=port)
    return ListenerService(scp, assembler)

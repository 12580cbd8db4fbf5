"""`seedance-pipeline`: demo, plan, run, costs, resolve, the callback receiver and the
emulator, from a shell."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from .catalog import CatalogError, find_catalog, load_prompts
from .costs import GROUPS, chart, rollup
from .planning import MediaFactsCache, plan_catalog
from .records import few
from .reports import (
    cost_report,
    costs_json,
    plan_report,
    print_costs,
    print_plan,
    print_run_summary,
    untabled_notes,
)
from .seedance import PriceTable
from .settings import SettingError, data_dir, env_number, first_day, parse_day
from .statuses import Status
from .storage import StoreError

SAMPLE_TIME_SCALE = 0.02


def _day(text: str) -> str:
    try:
        return parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
    return value


def _by(text: str) -> list[str]:
    by = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in by if g not in (*GROUPS, "scheduled_date", "day")]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"takes {', '.join(GROUPS)} or day, comma-separated, not {', '.join(unknown)}"
        )
    # once each: `model,model` grouped by one column twice (a traceback)
    return list(dict.fromkeys("scheduled_date" if g == "day" else g for g in by))


def _kinds(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seedance-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "--verbose",
        action="store_true",
        help="also print Dagster's step logs and stack traces (the UI always has them)",
    )

    demo = sub.add_parser(
        "demo",
        parents=[verbose],
        help="the whole pipeline on the embedded emulator",
        description="Start the emulator, run every day of data/catalog end to end, print costs.",
    )
    demo.add_argument(
        "--time-scale",
        type=_positive,
        default=SAMPLE_TIME_SCALE,
        help="emulated generation time as a fraction of the vendor's estimate "
        f"(default {SAMPLE_TIME_SCALE}; 1 is real time)",
    )
    demo.set_defaults(func=cmd_demo)

    plan = sub.add_parser(
        "plan",
        help="dry run: request bodies, estimates and rejections",
        description="Check a prompt catalog against the vendor's rules; nothing is sent.",
    )
    plan.add_argument("prompts", type=Path, help="the prompt catalog (.csv or .parquet)")
    plan.add_argument(
        "--media",
        type=Path,
        metavar="FILE",
        help="the media catalog (default: media.csv or .parquet beside PROMPTS)",
    )
    plan.add_argument(
        "--partition", type=_day, metavar="DATE", help="only the rows of this day (YYYY-MM-DD)"
    )
    plan.add_argument("--json", action="store_true", help="print one JSON document")
    plan.set_defaults(func=cmd_plan)

    run = sub.add_parser(
        "run",
        parents=[verbose],
        help="one partition end to end without a daemon",
        description="Plan, submit, poll until every task ended, save videos and tables for one "
        "day; runs are recorded in $DAGSTER_HOME (default ./dagster_home).",
    )
    run.add_argument("date", type=_day, help="the day to run (YYYY-MM-DD)")
    run.add_argument(
        "--prompts",
        type=Path,
        metavar="FILE",
        help="prompt catalog to use instead of data/catalog/prompts.*",
    )
    run.add_argument(
        "--media",
        type=Path,
        metavar="FILE",
        help="media catalog to use instead of data/catalog/media.*",
    )
    run.set_defaults(func=cmd_run)

    costs = sub.add_parser(
        "costs",
        help="the cost report from the tables",
        description="Tasks, seconds delivered, credits and money from the generated_videos "
        "tables under $SEEDANCE_DATA_DIR/warehouse.",
    )
    costs.add_argument("--since", type=_day, metavar="DATE", help="first day included")
    costs.add_argument("--until", type=_day, metavar="DATE", help="last day included")
    costs.add_argument(
        "--by",
        type=_by,
        default=list(GROUPS),
        help="groups, comma-separated, from model, quality, campaign, day "
        "(default model,quality,campaign; empty for the total only)",
    )
    costs.add_argument(
        "--png",
        type=Path,
        metavar="FILE",
        help="also draw credits charged per day, stacked by the --by groups, into FILE",
    )
    costs.add_argument("--json", action="store_true", help="print one JSON document")
    costs.set_defaults(func=cmd_costs)

    resolve = sub.add_parser(
        "resolve",
        help="settle a row whose submission outcome is unknown",
        description="Settle an `unknown` row after looking the prompt up on the EvoLink dashboard.",
    )
    resolve.add_argument("date", type=_day, help="the row's day (YYYY-MM-DD)")
    resolve.add_argument("prompt_id", help="the row's prompt_id")
    group = resolve.add_mutually_exclusive_group(required=True)
    group.add_argument("--task-id", help="the task the dashboard shows for this prompt")
    group.add_argument(
        "--forget", action="store_true", help="no task was made: allow the next run to submit it"
    )
    resolve.set_defaults(func=cmd_resolve)

    rebuild = sub.add_parser(
        "rebuild-ledger",
        help="restore a lost ledger from the days' submissions records (warehouse/submissions)",
    )
    rebuild.add_argument("dates", nargs="+", type=_day, help="the days to restore, YYYY-MM-DD")
    rebuild.set_defaults(func=cmd_rebuild_ledger)

    receiver = sub.add_parser(
        "callbacks", help="the callback receiver: confirms each callback and records it"
    )
    receiver.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (put a TLS proxy in front; default %(default)s)",
    )
    receiver.add_argument(
        "--port", type=int, default=8791, help="port to listen on (default %(default)s)"
    )
    receiver.set_defaults(func=cmd_callbacks)

    from .emulator.config import DEFAULT_API_KEY, LINK_FAULTS, POLL_FAULTS, POLL_RATE_MULTIPLE

    emu = sub.add_parser(
        "emulator",
        help="the local EvoLink emulator",
        description="Serve the EvoLink API on loopback. Rates are probabilities (0-1); faults are "
        "drawn from a seeded random source and listed per task by GET /emulator/ledger.",
    )
    emu.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    emu.add_argument(
        "--port",
        type=int,
        default=8790,
        help="port to listen on (0: any free; default %(default)s)",
    )
    emu.add_argument("--api-key", help=f"the key callers must send (default {DEFAULT_API_KEY})")
    emu.add_argument(
        "--credits", type=float, default=100000.0, help="starting balance (default %(default).0f)"
    )
    emu.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiplies vendor-like generation times (default %(default)s)",
    )
    emu.add_argument("--seed", type=int, help="seed of every random choice (default: random)")
    emu.add_argument("--state-dir", type=Path, help="SQLite state and files (default: a temp dir)")
    emu.add_argument(
        "--link-ttl",
        type=float,
        default=86400.0,
        help="seconds result links live (default %(default).0f)",
    )
    emu.add_argument(
        "--price-table",
        type=Path,
        help="JSON price table the emulator reserves by (shape of seedance/prices.json, every "
        "model and quality priced; default "
        "emulator/prices.json: the bundled table plus an assumed mini tier)",
    )
    emu.add_argument(
        "--rate-limit",
        type=float,
        help="creates per second before 429 (uploads: the same, counted apart; default no limit)",
    )
    emu.add_argument(
        "--poll-rate-limit",
        type=float,
        help=f"status queries and credit checks per second before 429 (default {POLL_RATE_MULTIPLE}"
        " x --rate-limit)",
    )
    emu.add_argument(
        "--error-rate",
        type=float,
        default=0.0,
        help="API requests answered 500, nothing done (default 0)",
    )
    emu.add_argument(
        "--task-failure-rate",
        type=float,
        default=0.0,
        help="tasks that end failed, unbilled (default 0)",
    )
    emu.add_argument(
        "--drop-rate",
        type=float,
        default=0.0,
        help="creates whose connection is cut after the task was made (default 0)",
    )
    emu.add_argument(
        "--post-create-error-rate",
        type=float,
        default=0.0,
        help="creates answered 502/503/504 by a gateway (HTML or JSON) after the task was made "
        "(default 0)",
    )
    emu.add_argument(
        "--garbled-create-rate",
        type=float,
        default=0.0,
        help="creates answered 200 with a non-JSON, truncated or id-less body, task made "
        "(default 0)",
    )
    emu.add_argument(
        "--link-fault-rate",
        type=float,
        default=0.0,
        help="tasks whose result link misbehaves (default 0)",
    )
    emu.add_argument(
        "--link-faults",
        type=_kinds,
        default=LINK_FAULTS,
        help=f"comma-separated link fault kinds (default all: {','.join(LINK_FAULTS)})",
    )
    emu.add_argument(
        "--link-fault-heal-after",
        type=int,
        help="a link fault heals after this many fetches (foreign_host: answers); default never",
    )
    emu.add_argument(
        "--link-drip-seconds",
        type=float,
        default=1.0,
        help="seconds between the bytes of a slow_drip link (default %(default)s)",
    )
    emu.add_argument(
        "--poll-fault-rate",
        type=float,
        default=0.0,
        help="tasks whose first polls misbehave (default 0)",
    )
    emu.add_argument(
        "--poll-faults",
        type=_kinds,
        default=POLL_FAULTS,
        help=f"comma-separated poll fault kinds (default all: {','.join(POLL_FAULTS)})",
    )
    emu.add_argument(
        "--poll-fault-polls",
        type=int,
        default=3,
        help="how many polls of a task a poll fault alters (default %(default)s)",
    )
    emu.add_argument(
        "--allow-loopback-callbacks",
        action="store_true",
        help="accept and deliver http callback_url on loopback (the vendor: public https only; "
        "other callbacks are accepted but never sent, the emulator has no network)",
    )
    emu.add_argument(
        "--callback-retry-scale",
        type=float,
        default=1.0,
        help="multiplies the callback retry delays of 1, 2 and 4 s (default %(default)s)",
    )
    emu.add_argument(
        "--callback-fail-first",
        type=int,
        default=0,
        help="the first N attempts of every callback fail without being sent (default 0)",
    )
    emu.set_defaults(func=cmd_emulator)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingError as exc:
        return _fail(exc)
    except BrokenPipeError:  # the reader left (`plan --json | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141  # 128 + SIGPIPE, what a shell reports for a command the pipe ended
    except OSError as exc:  # a full disk, a read-only folder, a file where a folder belongs
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}", 1)
    except Exception as exc:
        failure = _database_failure(exc)
        if failure is None:
            raise
        return _fail(failure, 1)


def _database_failure(exc: Exception) -> str | None:
    """One line for a database that failed (a read-only or full disk, a server gone), naming
    which; SQLAlchemy's own message carries the SQL and the row's values."""
    errors = sys.modules.get("sqlalchemy.exc")  # loaded by whatever used a database
    if errors is None or not isinstance(exc, errors.DBAPIError):
        return None
    where = "; ".join(getattr(exc, "__notes__", ())) or "Dagster's instance, in DAGSTER_HOME"
    return f"{' '.join(str(exc.orig).split())} ({where})"  # PostgreSQL's DETAIL lines too


def _fail(message: object, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _prices() -> PriceTable:
    try:
        return PriceTable.load()
    except ValueError as exc:  # SEEDANCE_PRICE_TABLE unreadable; the message says so
        raise SettingError(str(exc)) from None


# --- plan -----------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    from .s3 import S3Media, s3_client

    budget = env_number("SEEDANCE_MAX_CREDITS_PER_PARTITION")
    facts, prices = MediaFactsCache(data_dir(), S3Media(s3_client)), _prices()
    if args.prompts.is_dir():
        return _fail(f"{args.prompts} is a folder: give the prompts catalog file in it")
    if not args.prompts.is_file():
        return _fail(f"{args.prompts}: no such file (the prompts catalog, .csv or .parquet)")
    try:
        media_path = args.media or find_catalog(
            args.prompts.parent, "media", "give the media catalog with --media"
        )
        rows = plan_catalog(args.prompts, media_path, data_dir(), facts, prices, args.partition)
    except CatalogError as exc:
        return _fail(exc)
    report = plan_report(rows, budget)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_plan(report)
    _warn_before_first_day(rows)
    return 0


def _warn_before_first_day(rows: list) -> None:
    """Rows dated before the first partition are never run: a mistyped year, most often."""
    first = first_day()
    early = sorted(r.prompt.prompt_id for r in rows if r.prompt.scheduled_date < first)
    if early:
        print(
            f"warning: {len(early)} row(s) are dated before the first day, {first} "
            f"(SEEDANCE_PARTITIONS_START), and no run sends them: {few(early)}",
            file=sys.stderr,
        )


# --- run ------------------------------------------------------------------------------------


# `run`'s exit status when the day ran but paid videos are left to store.
VIDEOS_LEFT = 3


def cmd_run(args: argparse.Namespace) -> int:
    from .callbacks import CALLBACK_URL_ENV
    from .runner import PipelineStopped, run_partition

    data_dir()  # no data directory here: stop before anything is written
    try:
        videos = run_partition(
            args.date, prompts=args.prompts, media=args.media, verbose=args.verbose
        )
    except PipelineStopped as exc:
        return _fail(exc, exc.exit_code)
    print_run_summary(args.date, videos, callbacks=bool(os.environ.get(CALLBACK_URL_ENV)))
    if left := (videos.status == Status.DOWNLOAD_FAILED).sum():
        # Paid videos whose links die 24 h after their tasks ended: a scheduler must see it.
        print(
            f"{args.date}: {left} paid video(s) not stored yet (download_failed): run the day "
            f"again in {_minutes_to_retry(args.date)} minutes or more, within 24 hours",
            file=sys.stderr,
        )
        return VIDEOS_LEFT
    return 0


def _minutes_to_retry(partition: str) -> int:
    """Minutes until the first of the day's failed downloads is due again (each waits longer
    after each failure)."""
    from .definitions import resources_from_env

    rows = resources_from_env()["pipeline"].ledger().rows(partition)
    due = min((r.next_poll_at or 0 for r in rows if r.status == Status.DOWNLOAD_FAILED), default=0)
    return max(1, math.ceil((due - time.time()) / 60))


def cmd_demo(args: argparse.Namespace) -> int:
    from .callbacks import receiving, summary
    from .emulator import DEFAULT_API_KEY, EmulatorConfig, running_emulator
    from .ledger import Ledger, ledger_url
    from .runner import PipelineStopped, dagster_home, run_partition

    root = data_dir()
    try:
        days = sorted(
            {p.scheduled_date for p in load_prompts(find_catalog(root / "catalog", "prompts"))}
        )
    except CatalogError as exc:
        return _fail(exc)
    config = EmulatorConfig(
        port=0,
        time_scale=args.time_scale,
        state_dir=root / "emulator",
        seed=7,
        allow_loopback_callbacks=True,
    )
    started = time.monotonic()
    summaries = []
    ledger = Ledger(ledger_url(root))
    with running_emulator(config) as url, receiving(ledger, DEFAULT_API_KEY, url) as receiver:
        print(f"emulator listening on {url} (state in {config.state_dir})")
        print(f"callback receiver listening on {receiver}")
        os.environ.update(
            EVOLINK_BASE_URL=url, EVOLINK_FILES_URL=url, EVOLINK_API_KEY=DEFAULT_API_KEY
        )
        for day in days:
            try:
                summaries.append((day, run_partition(day, verbose=args.verbose)))
            except PipelineStopped as exc:
                return _fail(exc, exc.exit_code)
    print(
        f"\ndemo finished in {time.monotonic() - started:.0f} s; videos in {root / 'videos'}, "
        f"tables in {root / 'warehouse'}, Dagster runs in {dagster_home()} (README: the UI)\n"
    )
    for day, videos in summaries:
        print_run_summary(day, videos)
    print(summary(ledger.rows()) + "\n")
    return _print_costs(["model", "quality"])


# --- costs ----------------------------------------------------------------------------------


def cmd_costs(args: argparse.Namespace) -> int:
    if args.since and args.until and args.since > args.until:
        return _fail(f"--since {args.since} is after --until {args.until}: swap them")
    if args.png and not args.png.parent.is_dir():
        return _fail(f"--png {args.png}: folder {args.png.parent} does not exist; create it first")
    return _print_costs(args.by, args.since, args.until, args.png, args.json)


def _print_costs(
    by: list[str],
    since: str | None = None,
    until: str | None = None,
    png: Path | None = None,
    as_json: bool = False,
) -> int:
    from .records import spend_not_tabled
    from .s3 import S3Error

    if png and png.suffix.lower() != ".png":  # matplotlib wrote FILE.png, or raised
        return _fail(f"--png {png}: give a file name ending in .png")
    try:
        tables = _tables()
        videos = tables.read_all("generated_videos")
        untabled = spend_not_tabled(tables, videos, since or "0000", until or "9999")
    except S3Error as exc:
        return _fail(exc)
    if not videos.empty:
        videos = videos[videos.scheduled_date.between(since or "0000", until or "9999")]
    table, total = cost_report(videos, by, _prices())
    if png:
        try:
            days = ["scheduled_date", *(g for g in by if g != "scheduled_date")]
            chart(rollup(videos, days), png, by)
        except OSError as exc:
            return _fail(f"--png {png}: cannot write the chart ({exc.strerror})")
    if as_json:
        print(costs_json(table, total, videos, untabled))
    elif table.empty:
        print(f"no generated_videos tables in {tables.location} for these days")
    else:
        print_costs(table, total, by, videos)
    if not as_json:
        for note in untabled_notes(untabled):
            print(f"note: {note}")
    if png:
        print(f"chart: {png}", file=sys.stderr if as_json else sys.stdout)
    return 0


# --- resolve / emulator ---------------------------------------------------------------------


def cmd_resolve(args: argparse.Namespace) -> int:
    from .ledger import LEDGER_URL_ENV, Ledger, ledger_url
    from .records import LedgerLost, check_ledger, write_record
    from .resolving import attach_task

    path = data_dir() / "state" / "ledger.sqlite3"
    if not os.environ.get(LEDGER_URL_ENV) and not path.is_file():
        return _fail(f"no ledger at {path}; check SEEDANCE_DATA_DIR (or SEEDANCE_LEDGER_URL)")
    try:
        ledger = Ledger(ledger_url(data_dir()))
        # Not on a ledger older than the day's record: an `unknown` row there may be a task the
        # record has.
        check_ledger(ledger, _tables(), args.date)
        if args.forget:
            ledger.resolve(args.date, args.prompt_id, None)
        else:
            with _evolink("resolve --task-id asks the API about the task").client() as client:
                attach_task(ledger, client, args.date, args.prompt_id, args.task_id)
        forgotten = [args.prompt_id] if args.forget else []  # forgotten, not lost
        try:
            write_record(ledger, _tables(), args.date, forgotten)
        except (StoreError, OSError) as exc:  # OSError: the local warehouse
            refused = args.forget and _runs_refused(ledger, args.date)
            return _fail(_record_not_written(args, exc, refused), 1)
    except (LookupError, LedgerLost) as exc:
        return _fail(exc.args[0])
    print(
        f"{args.date}/{args.prompt_id}: "
        + (
            "forgotten; the next run of the day sends it (so does the task_poller sensor, unless "
            "the day's submission was stopped)"
            if args.forget
            else f"attached to {args.task_id}; the sensor polls it"
        )
    )
    return 0


def _runs_refused(ledger, day: str) -> bool:
    """Whether the day's record lists what the ledger no longer has (the forgotten prompt):
    the day's runs refuse until it is written. A record that cannot be read: as if so."""
    from .records import LedgerLost, check_ledger

    try:
        check_ledger(ledger, _tables(), day)
    except (LedgerLost, StoreError, OSError):
        return True
    return False


def _record_not_written(args: argparse.Namespace, exc: Exception, refused: bool) -> str:
    said = (
        f"{args.date}/{args.prompt_id} is settled in the ledger, but the day's record of "
        f"submissions was not written ({exc})"
    )
    if not refused:
        return f"{said}: the day's next step writes it"
    return (
        f"{said}. Until it is, the day's runs refuse, as the record lists a prompt the ledger "
        f"no longer has: run `seedance-pipeline rebuild-ledger {args.date}`, then this resolve "
        "again"
    )


def _pipeline():
    """The stores the environment names (the data directory, or S3)."""
    from .definitions import resources_from_env

    if not os.environ.get("SEEDANCE_S3_BUCKET"):
        data_dir()  # from another folder, refused: "no tables" would be a wrong answer
    return resources_from_env()["pipeline"]


def _tables():
    """The warehouse the environment names."""
    return _pipeline().tables()


def cmd_rebuild_ledger(args: argparse.Namespace) -> int:
    from .ledger import Ledger, ledger_url, safe_url
    from .records import RecordUnreadable, rebuild

    url = ledger_url(data_dir())
    ledger, pipeline = Ledger(url), _pipeline()
    for day in args.dates:
        try:
            restored = rebuild(ledger, pipeline.tables(), day, pipeline.videos())
        except (FileNotFoundError, RecordUnreadable) as exc:
            return _fail(exc)
        print(f"{day}: {restored} row(s) restored into {safe_url(url)}")
    return 0


def _evolink(why: str):
    """The EvoLink resource the environment configures, its key checked.

    Raises:
        SettingError: no key, or a key or URL that cannot be used (shown by main()).
    """
    from .definitions import resources_from_env

    if not os.environ.get("EVOLINK_API_KEY"):
        raise SettingError(f"EVOLINK_API_KEY is not set: {why}")
    evolink = resources_from_env()["evolink"].process_config_and_initialize()
    try:
        evolink.client().close()  # the key is checked as a client is made
    except ValueError as exc:
        raise SettingError(str(exc)) from None
    return evolink


def cmd_callbacks(args: argparse.Namespace) -> int:
    from .callbacks import create_app, serve
    from .definitions import resources_from_env

    if not os.environ.get("SEEDANCE_LEDGER_URL", "").strip():
        data_dir()  # from another folder, refused: a new, empty ledger there knows no token
    evolink = _evolink("the receiver confirms each callback with the API")
    ledger = resources_from_env()["pipeline"].ledger()
    print(f"callback receiver listening on http://{args.host}:{args.port} ({ledger!r})", flush=True)
    serve(create_app(ledger, evolink.async_client), args.host, args.port)
    return 0


def cmd_emulator(args: argparse.Namespace) -> int:
    from .emulator import DEFAULT_API_KEY, EmulatorConfig, serve

    settings = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    settings["api_key"] = args.api_key or DEFAULT_API_KEY
    try:
        if args.price_table:
            settings["price_table"] = PriceTable.load(args.price_table, given_by="--price-table")
        else:
            del settings["price_table"]
        config = EmulatorConfig(**settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        serve(config)
    except OSError as exc:  # the port is taken, or the state directory cannot be made
        where = exc.filename or f"--host {args.host} --port {args.port}"
        return _fail(f"the emulator cannot start: {exc.strerror or exc} ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

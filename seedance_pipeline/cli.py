"""`seedance-pipeline`: demo, plan, run, costs, resolve, the callback receiver and the
emulator, from a shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .catalog import CatalogError, find_catalog, load_media, load_prompts
from .costs import GROUPS, chart, rollup
from .planning import MediaFactsCache, PlannedRow, plan_partition, plan_row
from .seedance import PriceTable
from .settings import SettingError, data_dir
from .tables import read_all

SAMPLE_TIME_SCALE = 0.02


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seedance-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the whole pipeline on the embedded emulator")
    demo.add_argument("--time-scale", type=float, default=SAMPLE_TIME_SCALE)
    demo.set_defaults(func=cmd_demo)

    plan = sub.add_parser("plan", help="dry run: request bodies, estimates and rejections")
    plan.add_argument("prompts", type=Path)
    plan.add_argument("--media", type=Path)
    plan.add_argument("--partition")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=cmd_plan)

    run = sub.add_parser("run", help="one partition end to end without a daemon")
    run.add_argument("date")
    run.add_argument("--prompts", type=Path)
    run.add_argument("--media", type=Path)
    run.set_defaults(func=cmd_run)

    costs = sub.add_parser("costs", help="the cost report from the tables")
    costs.add_argument("--since")
    costs.add_argument("--until")
    costs.add_argument("--by", default="model,quality,campaign")
    costs.add_argument("--png", type=Path)
    costs.add_argument("--json", action="store_true")
    costs.set_defaults(func=cmd_costs)

    resolve = sub.add_parser("resolve", help="settle a row whose submission outcome is unknown")
    resolve.add_argument("date")
    resolve.add_argument("prompt_id")
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
    rebuild.add_argument("dates", nargs="+", help="the days to restore, YYYY-MM-DD")
    rebuild.set_defaults(func=cmd_rebuild_ledger)

    receiver = sub.add_parser(
        "callbacks", help="the callback receiver: confirms each callback and records it"
    )
    receiver.add_argument("--host", default="127.0.0.1")
    receiver.add_argument("--port", type=int, default=8791)
    receiver.set_defaults(func=cmd_callbacks)

    from .emulator.config import DEFAULT_API_KEY, LINK_FAULTS, POLL_FAULTS, POLL_RATE_MULTIPLE

    emu = sub.add_parser(
        "emulator",
        help="the local EvoLink emulator",
        description="Serve the EvoLink API on loopback. Rates are probabilities (0-1); faults are "
        "drawn from a seeded random source and listed per task by GET /emulator/ledger.",
    )
    emu.add_argument("--host", default="127.0.0.1", help="address to listen on")
    emu.add_argument("--port", type=int, default=8790, help="port to listen on (0: any free)")
    emu.add_argument("--api-key", help=f"the key callers must send (default {DEFAULT_API_KEY})")
    emu.add_argument("--credits", type=float, default=100000.0, help="starting balance")
    emu.add_argument(
        "--time-scale", type=float, default=1.0, help="multiplies vendor-like generation times"
    )
    emu.add_argument("--seed", type=int, help="seed of every random choice (default: random)")
    emu.add_argument("--state-dir", type=Path, help="SQLite state and files (default: a temp dir)")
    emu.add_argument("--link-ttl", type=float, default=86400.0, help="seconds result links live")
    emu.add_argument(
        "--price-table",
        type=Path,
        help="JSON price table the emulator reserves by (shape of seedance/prices.json; default "
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
        "--error-rate", type=float, default=0.0, help="API requests answered 500, nothing done"
    )
    emu.add_argument(
        "--task-failure-rate", type=float, default=0.0, help="tasks that end failed (unbilled)"
    )
    emu.add_argument(
        "--drop-rate",
        type=float,
        default=0.0,
        help="creates whose connection is cut after the task was made",
    )
    emu.add_argument(
        "--post-create-error-rate",
        type=float,
        default=0.0,
        help="creates answered 502/503/504 by a gateway (HTML or JSON) after the task was made",
    )
    emu.add_argument(
        "--garbled-create-rate",
        type=float,
        default=0.0,
        help="creates answered 200 with a non-JSON, truncated or id-less body (task made)",
    )
    emu.add_argument(
        "--link-fault-rate", type=float, default=0.0, help="tasks whose result link misbehaves"
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
        help="seconds between the bytes of a slow_drip link",
    )
    emu.add_argument(
        "--poll-fault-rate", type=float, default=0.0, help="tasks whose first polls misbehave"
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
        help="how many polls of a task a poll fault alters",
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
        help="multiplies the callback retry delays of 1, 2 and 4 s",
    )
    emu.add_argument(
        "--callback-fail-first",
        type=int,
        default=0,
        help="the first N attempts of every callback fail without being sent",
    )
    emu.set_defaults(func=cmd_emulator)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SettingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


# --- plan -----------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    try:
        prompts = load_prompts(args.prompts)
        media_path = args.media or find_catalog(args.prompts.parent, "media")
        media = load_media(media_path, data_dir())
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    facts, prices = MediaFactsCache(data_dir()), PriceTable.load()
    if args.partition:
        rows = plan_partition(prompts, media, args.partition, facts, prices)
    else:
        rows = [plan_row(p, media, facts, prices) for p in prompts]
    report = plan_report(rows)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_plan(report)
    return 0


def plan_report(rows: list[PlannedRow]) -> dict:
    accepted = [r for r in rows if r.accepted]
    report = {
        "accepted": [
            {
                "prompt_id": r.prompt.prompt_id,
                "request": r.body,
                "estimated_credits": r.estimated_credits,
            }
            for r in accepted
        ],
        "rejected": [
            {"prompt_id": r.prompt.prompt_id, "errors": r.errors} for r in rows if not r.accepted
        ],
        "estimated_credits_total": round(sum(r.estimated_credits for r in accepted), 4),
    }
    budget = os.environ.get("SEEDANCE_MAX_CREDITS_PER_PARTITION")
    if budget:
        report["budget"] = {
            "max_credits_per_partition": float(budget),
            "within_budget": report["estimated_credits_total"] <= float(budget),
        }
    return report


def print_plan(report: dict) -> None:
    for row in report["accepted"]:
        body = row["request"]
        print(
            f"ACCEPT {row['prompt_id']:<24} {body['model']:<38} {body['quality']:>5} "
            f"{body['duration']:>3}s  {row['estimated_credits']:>10.4f} credits"
        )
    for row in report["rejected"]:
        print(f"REJECT {row['prompt_id']:<24} " + "\n       ".ljust(32).join(row["errors"]))
    print(
        f"{len(report['accepted'])} accepted, {len(report['rejected'])} rejected, "
        f"estimated {report['estimated_credits_total']:.4f} credits"
    )
    if "budget" in report:
        verdict = "within" if report["budget"]["within_budget"] else "OVER"
        print(f"budget {report['budget']['max_credits_per_partition']:g} credits: {verdict}")


# --- run ------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import PipelineStopped, run_partition

    data_dir()  # no data directory here: stop before anything is written
    try:
        run_partition(args.date, prompts=args.prompts, media=args.media)
    except PipelineStopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .callbacks import receiving, summary
    from .emulator import DEFAULT_API_KEY, EmulatorConfig, running_emulator
    from .ledger import Ledger, ledger_url
    from .runner import PipelineStopped, run_partition

    root = data_dir()
    try:
        days = sorted(
            {p.scheduled_date for p in load_prompts(find_catalog(root / "catalog", "prompts"))}
        )
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = EmulatorConfig(
        port=0,
        time_scale=args.time_scale,
        state_dir=root / "emulator",
        seed=7,
        allow_loopback_callbacks=True,
    )
    started = time.monotonic()
    ledger = Ledger(ledger_url(root))
    with running_emulator(config) as url, receiving(ledger, DEFAULT_API_KEY, url) as receiver:
        print(f"emulator listening on {url} (state in {config.state_dir})")
        print(f"callback receiver listening on {receiver}")
        os.environ.update(
            EVOLINK_BASE_URL=url, EVOLINK_FILES_URL=url, EVOLINK_API_KEY=DEFAULT_API_KEY
        )
        for day in days:
            try:
                run_partition(day)
            except PipelineStopped as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
    print(
        f"\ndemo finished in {time.monotonic() - started:.0f} s; videos in {root / 'videos'}, "
        f"tables in {root / 'warehouse'}"
    )
    print(summary(ledger.rows()) + "\n")
    return cmd_costs(
        argparse.Namespace(since=None, until=None, by="model,quality", png=None, json=False)
    )


# --- costs ----------------------------------------------------------------------------------


def cmd_costs(args: argparse.Namespace) -> int:
    by = [g.strip() for g in args.by.split(",") if g.strip()] if args.by else []
    unknown = [g for g in by if g not in (*GROUPS, "scheduled_date", "day")]
    if unknown:
        print(
            f"error: --by takes {', '.join(GROUPS)} or day, not {', '.join(unknown)}",
            file=sys.stderr,
        )
        return 2
    by = ["scheduled_date" if g == "day" else g for g in by]
    videos = read_all(data_dir(), "generated_videos")
    if not videos.empty:
        videos = videos[videos.scheduled_date.between(args.since or "0000", args.until or "9999")]
    table, total = rollup(videos, by), rollup(videos, [])
    if args.png:
        chart(rollup(videos, ["scheduled_date", "model"]), args.png)
    if args.json:
        print(
            json.dumps(
                {
                    "groups": table.to_dict("records"),
                    "total": total.to_dict("records")[0] if len(total) else {},
                },
                default=str,
                indent=2,
            )
        )
        return 0
    if table.empty:
        print(f"no generated_videos tables under {data_dir() / 'warehouse'} yet")
        return 0
    columns = [
        *by,
        "tasks",
        "completed",
        "failed",
        "rejected",
        "seconds_delivered",
        "credits_estimated",
        "credits_reserved",
        "credits_charged",
        "credits_per_delivered_second",
    ]
    shown = table[columns].copy()
    total_row = {c: total.iloc[0][c] if c in total else "" for c in columns}
    total_row[by[0] if by else "tasks"] = "TOTAL" if by else total_row["tasks"]
    print(shown.to_string(index=False))
    print(
        "TOTAL: "
        + ", ".join(
            f"{c}={total.iloc[0][c]:g}"
            for c in columns[len(by) :]
            if c in total and total.iloc[0][c] == total.iloc[0][c]
        )
    )
    return 0


# --- resolve / emulator ---------------------------------------------------------------------


def cmd_resolve(args: argparse.Namespace) -> int:
    from .ledger import LEDGER_URL_ENV, Ledger, ledger_url
    from .records import write_record

    path = data_dir() / "state" / "ledger.sqlite3"
    if not os.environ.get(LEDGER_URL_ENV) and not path.is_file():
        print(f"error: no ledger at {path}; check SEEDANCE_DATA_DIR", file=sys.stderr)
        return 2
    try:
        ledger = Ledger(ledger_url(data_dir()))
        ledger.resolve(args.date, args.prompt_id, None if args.forget else args.task_id)
        write_record(ledger, data_dir(), args.date)  # a forgotten row is no lost one
    except LookupError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    print(
        f"{args.date}/{args.prompt_id}: "
        + (
            "forgotten; the next run submits it"
            if args.forget
            else f"attached to {args.task_id}; the sensor polls it"
        )
    )
    return 0


def cmd_rebuild_ledger(args: argparse.Namespace) -> int:
    from .ledger import Ledger, ledger_url, safe_url
    from .records import rebuild

    url = ledger_url(data_dir())
    ledger = Ledger(url)
    for day in args.dates:
        try:
            restored = rebuild(ledger, data_dir(), day)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{day}: {restored} row(s) restored into {safe_url(url)}")
    return 0


def cmd_callbacks(args: argparse.Namespace) -> int:
    from .callbacks import create_app, serve
    from .definitions import resources_from_env

    if not os.environ.get("EVOLINK_API_KEY"):
        print(
            "error: EVOLINK_API_KEY is not set: the receiver confirms each callback with the API",
            file=sys.stderr,
        )
        return 2
    try:
        resources = resources_from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    evolink = resources["evolink"].process_config_and_initialize()
    ledger = resources["pipeline"].ledger()
    print(f"callback receiver listening on http://{args.host}:{args.port} ({ledger!r})", flush=True)
    serve(create_app(ledger, evolink.async_client), args.host, args.port)
    return 0


def _kinds(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


def cmd_emulator(args: argparse.Namespace) -> int:
    from .emulator import DEFAULT_API_KEY, EmulatorConfig, serve

    settings = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    settings["api_key"] = args.api_key or DEFAULT_API_KEY
    try:
        if args.price_table:
            settings["price_table"] = PriceTable.load(args.price_table)
        else:
            del settings["price_table"]
        config = EmulatorConfig(**settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())

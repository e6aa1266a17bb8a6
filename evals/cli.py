"""`interlock eval [suite ...]` (the CI gate) and `interlock eval add-from-trace RUN_ID ...`.

    interlock eval                           every suite; exit 1 when the gate fails
    interlock eval router refusal --limit 5  a subset (compared with the baseline on the same cases)
    interlock eval --update-baselines        accept the current results as the new baselines
    interlock eval add-from-trace RUN_ID --suite router --expect intent=order_status [--thread-id T]
    interlock eval retrieval --dataset DIR   the retrieval area's BEIR evaluation (interlock retrieval-eval)

Prints one table (suite, metric, value, baseline, tolerance, status), writes
evals/results/<suite>.json, and names the cases that passed in the baseline and fail now.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from interlock.kernel.settings import get_settings

EXIT_FAILED, EXIT_USAGE = 1, 2


def _gate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="run only the first N cases of each suite (compared with the baseline on those cases)")
    parser.add_argument("--update-baselines", action="store_true",
                        help="write evals/baselines/<suite>.json from this run (commit them to accept)")
    parser.add_argument("--strict", action="store_true",
                        help="also fail when any case that passed in the baseline fails now")
    parser.add_argument("--baselines-dir", type=Path, default=None)
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--policy-dir", type=Path, default=None, help="evaluate this policy directory instead")
    parser.add_argument("--home", type=Path, default=None,
                        help="keep the run's data here (default: a temporary directory, removed afterwards)")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="run the eval suites and the CI gate; add cases from traces",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _gate_options(parser)
    parser.add_argument("words", nargs=argparse.REMAINDER, metavar="suite | add-from-trace RUN_ID ...")
    parser.set_defaults(func=run)


def _trace_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interlock eval add-from-trace",
                                     description="append a production trace to a suite's dataset as an eval case")
    parser.add_argument("run_id")
    parser.add_argument("--suite", required=True)
    parser.add_argument("--expect", action="append", default=[], metavar="KEY=VALUE", required=True,
                        help="expected behaviour, e.g. intent=order_status, expect=refuse, facts='[\"30 days\"]'")
    parser.add_argument("--thread-id", default=None, help="the run's thread (default: searched for)")
    settings = get_settings()
    parser.add_argument("--url", default=settings.url)
    parser.add_argument("--token", default=settings.token.get_secret_value() if settings.token else None,
                        help="bearer token for a server with auth (default $INTERLOCK_TOKEN)")
    parser.add_argument("--id", default=None, help="case id (default trace-<run id>)")
    parser.add_argument("--dataset", type=Path, default=None, help="append here instead of the suite's dataset")
    return parser


def run(args: argparse.Namespace) -> int:
    words: list[str] = list(args.words or [])
    if words[:1] == ["add-from-trace"]:
        return add_from_trace(_trace_parser().parse_args(words[1:]))
    if words[:1] == ["retrieval"] and any(w == "--dataset" or w.startswith("--dataset=") for w in words):
        return _beir(words[1:])
    parser = argparse.ArgumentParser(prog="interlock eval")
    _gate_options(parser)
    parser.add_argument("suites", nargs="*")
    gate_args = parser.parse_args(words, namespace=argparse.Namespace(**{k: v for k, v in vars(args).items()
                                                                           if k not in ("words", "func")
                                                                           and v not in (None, False)}))
    return run_gate(gate_args)


def _beir(words: list[str]) -> int:
    from interlock.graphs.retrieval.cli import add_eval_arguments
    from interlock.graphs.retrieval.cli import run_eval as beir_eval

    parser = argparse.ArgumentParser(prog="interlock eval retrieval",
                                     description="nDCG/recall/MRR of each search mode on a BEIR dataset")
    add_eval_arguments(parser)
    return int(beir_eval(parser.parse_args(words)) or 0)


def run_gate(args: argparse.Namespace) -> int:
    from interlock.evals.environment import EvalSetupError
    from interlock.evals.gate import (
        BASELINES,
        RESULTS,
        BaselineError,
        baseline_from,
        compare,
        load_baseline,
        render_table,
        write_json,
    )
    from interlock.evals.harness import run_suites
    from interlock.evals.suite import DatasetError
    from interlock.evals.suites import SUITES, get_suite
    from interlock.policies.loader import PolicyError

    if args.list:
        for name, cls in SUITES.items():
            print(f"{name:14} {cls.description}")
        return 0
    names = list(dict.fromkeys(args.suites or SUITES))
    try:
        suites = [get_suite(n) for n in names]
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    if args.limit is not None and args.update_baselines:
        print("error: --update-baselines needs the full suites (drop --limit)", file=sys.stderr)
        return EXIT_USAGE
    if args.policy_dir is not None:
        from interlock.policies.loader import load_policies

        try:
            load_policies(args.policy_dir)  # refuse a broken candidate before starting anything
        except (PolicyError, OSError) as exc:
            print(f"error: --policy-dir {args.policy_dir}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    baselines_dir = args.baselines_dir or BASELINES
    results_dir = args.results_dir or RESULTS
    try:
        baselines = {s.name: load_baseline(s.name, baselines_dir) for s in suites}
        results = asyncio.run(run_suites(suites, limit=args.limit, home=args.home, policy_dir=args.policy_dir))
    except (DatasetError, BaselineError, PolicyError, EvalSetupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    verdicts = []
    for suite, result in zip(suites, results, strict=True):
        write_json(results_dir / f"{suite.name}.json", result)
        if args.update_baselines:
            baselines[suite.name] = baseline_from(result, suite, baselines[suite.name])
            write_json(baselines_dir / f"{suite.name}.json", baselines[suite.name])  # type: ignore[arg-type]
        verdicts.append(compare(result, suite, baselines[suite.name], strict=args.strict))
    print(render_table([row for v in verdicts for row in v.rows]))
    by_suite = {r.suite: r for r in results}
    failed = False
    for verdict in verdicts:
        details = {c.id: c for c in by_suite[verdict.suite].cases}
        if verdict.failed:
            failed = True
            print(f"\n{verdict.suite}: GATE FAILED")
            for reason in verdict.reasons:
                print(f"  - {reason}")
        if verdict.newly_failing:
            print(f"\n{verdict.suite}: {len(verdict.newly_failing)} case(s) passed in the baseline and fail now:")
            for case_id in verdict.newly_failing:
                print(f"  {case_id}  {details[case_id].label}\n      {_why(details[case_id])}")
        if verdict.new_cases_failing:
            print(f"\n{verdict.suite}: failing case(s) not in the baseline yet: {', '.join(verdict.new_cases_failing)}")
    changed = [r.suite for r in results if baselines[r.suite] is not None
               and baselines[r.suite].policy_hash != r.policy_hash]  # type: ignore[union-attr]
    if changed:
        print(f"\nnote: the policy set changed since the baseline of: {', '.join(changed)} "
              f"(now {results[0].policy_hash[:12]})")
    seconds = sum(r.seconds for r in results)
    print(f"\n{sum(r.n for r in results)} cases in {seconds:.1f} s; results in {results_dir}; "
          f"gate {'FAILED' if failed else 'passed'}")
    return EXIT_FAILED if failed else 0


def _why(case: Any) -> str:
    if case.error:
        return f"error: {case.error}"
    # Checks where 1 is good and fell short; "false_positive"-style checks fail when they are 1.
    bad = {"false_positive", "falsely_refused", "acted", "acl_leak"}
    failed = sorted(k for k, v in case.scores.items() if k != "pass" and ((v >= 1.0) if k in bad else (v < 1.0)))
    shown = {k: v for k, v in case.detail.items() if k in ("intent", "route", "outcome", "ranked", "flagged")}
    return f"failed: {', '.join(failed) or '-'}" + (f"; got {shown}" if shown else "")


def add_from_trace(args: argparse.Namespace) -> int:
    from interlock.evals.suite import DatasetError
    from interlock.evals.suites import get_suite
    from interlock.evals.traces import TraceClient, TraceError, append_case, case_from_trace, parse_expect

    try:
        suite = get_suite(args.suite)
        expect = parse_expect(args.expect)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return EXIT_USAGE
    client = TraceClient(args.url, token=args.token)
    try:
        trace = client.trace(args.run_id, args.thread_id)
        case = case_from_trace(suite, trace, expect, case_id=args.id)
        path = args.dataset or suite.path
        append_case(path, case)
    except (TraceError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        client.close()
    print(f"added {case.id} to {path} ({suite.name})")
    return 0

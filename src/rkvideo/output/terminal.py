"""The text the command line shows: plans, results, model profiles, jobs, search hits, reports.

Why functions that return text: the command line chooses the stream (stdout for data, stderr for
notes) and the daemon or a later web page may want the same words; none of them should format a
table by hand. Tables go through ``tabulate`` (plain format, no borders), which keeps the columns
of the earlier hand-padded output. Every function takes records or their JSON form and prints
nothing. Every field that may hold a file name (or text a model wrote) goes through
``printable``, so control characters in it never reach the terminal raw.
"""
from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from .. import printable
from ..activity import clock
from ..store import timings_text

# Shown under the model table: which facts a user should check against the model files.
UNVERIFIED_NOTE = "* UNVERIFIED: check against your model files; override in the [model] section of config.toml."


def table(rows: list, align: tuple) -> str:
    """Columns separated by two spaces, the first row as the heading, no trailing spaces."""
    text = tabulate([[printable.line(c) for c in row] for row in rows], tablefmt="plain", colalign=align,
                    disable_numparse=True)
    return "\n".join(line.rstrip() for line in text.splitlines())


# ------------------------------------------------------------------ describe

def plan(result) -> str:
    """A dry run: the frames picked, with timestamps, and the token budget they fit in."""
    budget = result.plan
    capped = ", capped" if result.frames_capped_by_budget else ""
    images = result.kind.value == "images"
    lines = [f"{printable.line(', '.join(result.inputs))}: {result.kind.value}, {len(result.frames)} frames "
             f"(budget allows {budget['max_frames']}{capped})"]
    for f in result.frames:
        pts = "" if f["pts"] is None else f" pts {f['pts']}"
        where = f" {printable.line(Path(f['source']).name)}" if images else ""
        lines.append(f"  frame {f['index']:>3}  {f['seconds']:>9.3f}s{pts}{where}")
    lines.append(f"  tokens: prompt ≤{budget['prompt_tokens']} + vision {len(result.frames)}×"
                 f"{budget['tokens_per_frame']} + new {budget['max_new_tokens']} + reserve {budget['reserve']} "
                 f"of {budget['max_context']}")
    return "\n".join(lines)


def moment(event: dict) -> str:
    """One moment of a timeline: ``00:30–00:42  a person walks …`` (the text on one line)."""
    return f"{clock(event['start'])}–{clock(event['end'])}  {' '.join((event.get('text') or '').split())}"


def timeline_plan(result) -> str:
    """A timeline dry run: what the analysis found, and the frames each moment's request would get."""
    figures = result.plan.get("activity", {})
    lines = [f"{result.inputs[0]}: timeline, {len(result.events)} moment(s) to describe, "
             f"budget {result.plan['max_frames']} frames per request",
             f"  activity: {figures.get('method')}, {figures.get('thumbnails')} of {figures.get('keyframes')} "
             f"keyframes decoded, peak {figures.get('peak')}, analysed in {figures.get('seconds')} s"]
    for event in result.events:
        stamps = ", ".join(f"{f['seconds']:.1f}" for f in event.frames)
        lines.append(f"  {clock(event.start)}–{clock(event.end)}  score {event.score:.2f}, frames at s: {stamps}")
    return "\n".join(lines)


def usage(result) -> str:
    """The line after a description: tokens and seconds per stage."""
    return f"[{result.tokens.prompt} prompt + {result.tokens.new} new tokens; {timings_text(result.timings)}]"


# ------------------------------------------------------------------ models

def models(profiles: list, family_notes: dict | None = None) -> str:
    """The profile table; facts marked * are unverified. Then each profile's notes, and the notes of
    each family (``family_notes``) once."""
    rows = [("profile", "input", "tokens", "width", "outputs", "normalize", "runtime",
             "tags (start / content / end)")]
    for p in profiles:
        def mark(field, value, p=p):
            return f"{value}*" if field in p.unverified else str(value)
        tags = f"{p.img_start} / {p.img_content} / {p.img_end}"
        if {"img_start", "img_end", "img_content"} & set(p.unverified):
            tags += "*"
        rows.append((p.name, mark("input_size", p.input_size), mark("tokens_per_image", p.tokens_per_image),
                     mark("embed_width", p.embed_width), p.encoder_outputs, p.normalize, f"≥ {p.min_runtime}",
                     tags))
    lines = [table(rows, ("left",) * len(rows[0])), "", UNVERIFIED_NOTE, "", "Notes:"]
    lines += [f"  {p.name}: {p.notes}" for p in profiles if p.notes]
    shown = []
    for p in profiles:
        note = (family_notes or {}).get(p.family)
        if note and p.family not in shown:
            shown.append(p.family)
            lines.append(f"  {p.family} (every size): {note}")
    return "\n".join(lines)


# ------------------------------------------------------------------ jobs

def note(job: dict) -> str:
    """What the list says after a path: the description count, or the error / duplicate reason."""
    if job["status"] == "done" or (job["status"] == "queued" and not job["error"]):
        n = job.get("descriptions") or 0
        return f"{n} description{'s' if n != 1 else ''}" if n else ""
    return job["error"] or ""


def jobs(rows: list) -> str:
    """``rkvideo list``: one line per job (the JSON form, ``Job.as_dict()``)."""
    lines = [("id", "status", "tries", "path")]
    for job in rows:
        why = note(job)
        lines.append((job["id"], job["status"], job["attempts"], job["path"] + (f"  — {why}" if why else "")))
    return table(lines, ("right", "left", "right", "left"))


def jobs_summary(rows: list, order) -> str:
    """``12 jobs: 10 done, 2 failed`` with the statuses in ``order``."""
    counts: dict = {}
    for job in rows:
        counts[job["status"]] = counts.get(job["status"], 0) + 1
    parts = ", ".join(f"{counts[s]} {s}" for s in order if s in counts)
    return f"{len(rows)} job{'s' if len(rows) != 1 else ''}" + (f": {parts}" if parts else "")


def job(data: dict) -> str:
    """``rkvideo show``: the job, then every description stored for it, newest last."""
    lines = [printable.line(data["path"]), f"  job {data['id']}: {data['status']}, {data['attempts']} attempt(s)"]
    if data["size"] is not None:
        duration = f", {data['duration']:.1f} s" if data["duration"] else ""
        lines.append(f"  size {data['size']} bytes{duration}, content {(data['hash'] or '?')[:16]}")
    if data["error"]:
        lines.append(f"  {'note' if data['status'] in ('done', 'skipped') else 'error'}: "
                     f"{printable.line(data['error'])}")
    if data["duplicate_of"]:
        lines.append(f"  duplicate of job {data['duplicate_of']}")
    for d in data["descriptions"]:
        stamps = ", ".join(f"{f['seconds']:.1f}" for f in d["frames"])
        lines += ["", f"description {d['id']} ({d['created_at']}, {d['source']})",
                  printable.line(f"  model {d['model']}: vision {d['vision_model']}, llm {d['llm_model']}"),
                  f"  prompt: {printable.line(d['prompt'])}",
                  f"  frames ({d['frame_count']}) at s: {stamps}",
                  f"  tokens: {d['prompt_tokens']} prompt ({d['vision_tokens']} vision) + {d['new_tokens']} new",
                  f"  timings: {timings_text(d['timings'])}",
                  "", printable.block(d["text"])]
        if d.get("events"):
            lines += ["", f"timeline ({len(d['events'])} moments):"] + [f"  {printable.line(moment(e))}"
                                                                      for e in d["events"]]
    return "\n".join(lines)


def hits(rows: list) -> str:
    """``rkvideo search``: a moment as one line, ``door.mp4 01:15–01:40  snippet``; a description as its
    recording and where it is stored, then the snippet on one line."""
    lines = []
    for hit in rows:
        snippet = printable.line(" ".join(hit["snippet"].split()))
        if hit.get("kind") == "moment":
            lines.append(f"{printable.line(hit['path'])} {clock(hit['start'])}–{clock(hit['end'])}  {snippet}")
            continue
        lines.append(printable.line(f"{hit['path']}  (job {hit['job_id']}, description {hit['id']}, {hit['model']})"))
        lines.append(f"  {snippet}")
    return "\n".join(lines)


def ago(seconds: float) -> str:
    """``4 s``, ``3 min``, ``2 h``, ``5 d``: how long ago, roughly."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"


def workers(rows: list) -> str:
    """``rkvideo workers``: one line per daemon: its state, when it last reported, the job it runs
    (the JSON form: ``state`` as shown, ``reported`` and ``running`` in seconds)."""
    lines = [("worker", "state", "reported", "job")]
    for w in rows:
        job = f"{w['job_id']} {w['path']} (for {ago(w['running'])})" if w["job_id"] else ""
        lines.append((w["id"], w["state"], f"{ago(w['reported'])} ago", job))
    return table(lines, ("left",) * 4)

# ------------------------------------------------------------------ reports

def doctor(report) -> str:
    """``rkvideo doctor``: one line per check, the fix under each that is not OK, then the verdict."""
    width = max(len(c.name) for c in report.checks)
    lines = ["rkvideo doctor: RK3588 board check", ""]
    for c in report.checks:
        lines.append(f"{c.status:<4}  {c.name:<{width}}  {printable.line(c.message)}")
        if c.fix and c.status != "OK":
            lines.append(f"{'':4}  {'':<{width}}  → {printable.line(c.fix)}")
    lines += ["", report.summary]
    return "\n".join(lines)


def selftest(report: dict, workdir, stages: tuple) -> str:
    """``rkvideo selftest``: per-request counts and seconds per stage (in ``stages`` order), each
    check, then PASS or FAIL on the last line."""
    def seconds(timings: dict) -> str:
        return ", ".join(f"{k} {timings[k]:.3f}s" for k in stages if k in timings)

    lines = ["rkvideo selftest: tiny random-weight models built here; their text is meaningless by design."]
    if report.get("error"):
        lines.append(f"  error: {printable.line(report['error'])}")
    t = report["timings"]
    if t:
        lines.append(f"  build models {t['build']:.3f}s, load {t.get('load', 0):.3f}s")
    for key, label in (("video", "video"), ("images", "images"), ("video_again", "again")):
        result = report["results"].get(key)
        if result:
            lines.append(f"  {label:<7} {len(result['frames'])} frames, {result['tokens']['prompt']} prompt + "
                         f"{result['tokens']['new']} new tokens: {seconds(result['timings'])}")
            lines.append(f"          text: {result['text']!r}")
    for c in report["checks"]:
        lines.append(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['name']}: {printable.line(c['detail'])}")
    if workdir:
        root = Path(workdir)
        lines.append(printable.line(f"  files kept in {root}; try: rkvideo describe {root / 'clip.mp4'} --config "
                                    f"{root / 'config.toml'}"))
    lines.append("PASS" if report["pass"] else "FAIL")
    return "\n".join(lines)


# ------------------------------------------------------------------ the notification outbox

def outbox(rows: list) -> str:
    """``rkvideo outbox``: one line per message and target waiting for delivery, oldest first."""
    lines = [("row", "created", "tries", "target", "topic", "message", "last error")]
    for row in rows:
        lines.append((row["id"], row["created_at"][:19].replace("T", " "), row["attempts"], row["target"],
                      row["topic"] or "-", row["message"][:12], row["last_error"] or ""))
    return table(lines, ("right", "left", "right", "left", "left", "left", "left"))


def outbox_summary(counts: dict) -> str:
    """The line under it: per target how many wait, since when."""
    if not counts:
        return "outbox empty: every message was delivered"
    return printable.line("; ".join(f"{c['n']} waiting for {target} since {c['oldest'][:19].replace('T', ' ')}"
                                    for target, c in counts.items()))

"""The benchmarks' tables: rows measured in one run, as one markdown table, printed and appended
with the date and the core count to bench/RESULTS.md."""
import datetime
import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
HEADER = ("Measurement", "socketless", "Limit / peers (same run)", "Ratio", "Goal", "Holds")


def cell(value):
    """A row's cell: a goal that holds (True), one that does not (False), none (None), or text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(rows, header=HEADER):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def record(text, title=""):
    """Prints the table and appends it under a dated heading (`title` follows the core count)."""
    print(text)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with open(RESULTS, "a") as out:
        out.write(f"\n## {stamp}, {os.cpu_count()} cores{title}\n\n{text}\n")
    print(f"\nappended to bench/RESULTS.md ({stamp})")

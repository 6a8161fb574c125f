//! The flag tables in README.md, docs/gateway.md and docs/conformance.md against clap's own
//! command tree: every flag of every verb is in one of its tables with its variable and its
//! default, no row names a flag that does not exist, and every flag has a `SOCKETLESS_*`
//! variable. The tables are written by hand; this is what keeps them true. Also, as processes,
//! that `probe` and `conformance` check their settings at start and report every problem with
//! its flag and variable, like the other verbs.

use std::collections::BTreeMap;

use clap::CommandFactory;
use socketless::cli::Cli;

/// One argument as clap declares it.
#[derive(Debug)]
struct Flag {
    /// `--name`, or the value name of a positional argument (`URL`).
    name: String,
    env: Option<String>,
    /// clap's default values joined by commas; `None` without one.
    default: Option<String>,
}

/// Every verb's arguments, and the root's global ones under `socketless`.
fn clap_flags() -> BTreeMap<String, Vec<Flag>> {
    let root = Cli::command();
    let describe = |arg: &clap::Arg| {
        let name = match arg.get_long() {
            Some(long) => format!("--{long}"),
            None => arg
                .get_value_names()
                .and_then(|v| v.first().map(|n| n.to_string()))
                .unwrap_or_else(|| arg.get_id().to_string().to_uppercase()),
        };
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        Flag {
            name,
            env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
            default: (!defaults.is_empty()).then(|| defaults.join(",")),
        }
    };
    // The root's arguments are the global ones; a verb's own exclude them.
    let own = |command: &clap::Command, root: bool| -> Vec<Flag> {
        command
            .get_arguments()
            .filter(|a| root || !a.is_global_set())
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
            .map(describe)
            .collect()
    };
    let mut all = BTreeMap::new();
    all.insert("socketless".to_string(), own(&root, true));
    for verb in root.get_subcommands() {
        all.insert(verb.get_name().to_string(), own(verb, false));
    }
    all
}

/// Where each flag table is, by its file and the heading above it, and whose flags it lists.
const TABLES: &[(&str, &str, &str)] = &[
    ("README.md", "### Configuration", "serve"),
    ("README.md", "### Configuration", "socketless"),
    ("README.md", "### Several replicas, no broker", "gateway"),
    ("README.md", "## `socketless dev`", "dev"),
    ("README.md", "## `socketless probe`", "probe"),
    ("docs/gateway.md", "## Flags", "gateway"),
    ("docs/gateway.md", "## Memory budgets", "gateway"),
    ("docs/conformance.md", "## Flags", "conformance"),
];

/// One row of a table: its flag, variable and default cells as written.
#[derive(Debug)]
struct Row {
    flag: String,
    variable: String,
    /// `None` in a table without a Default column.
    default: Option<String>,
}

/// A table: where it is (file and heading) and its rows.
#[derive(Debug)]
struct Table {
    file: &'static str,
    heading: String,
    rows: Vec<Row>,
}

impl Table {
    fn name(&self) -> String {
        format!("{}, the table under {:?}", self.file, self.heading)
    }
}

/// Splits a table line into its cells, on `|` not escaped with a backslash.
fn cells(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut chars = line.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cell.push('|');
                chars.next();
            }
            '|' => out.push(std::mem::take(&mut cell).trim().to_string()),
            c => cell.push(c),
        }
    }
    if !cell.trim().is_empty() {
        out.push(cell.trim().to_string());
    }
    out
}

/// The text between backticks in a cell, in order.
fn quoted(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// Every flag table (a header starting `| Flag | Variable |`) in a file, outside code blocks.
fn tables(file: &'static str, text: &str) -> Vec<Table> {
    let mut found = Vec::new();
    let mut heading = String::new();
    let mut fenced = false;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        if line.starts_with('#') {
            heading = line.trim().to_string();
            continue;
        }
        let header = cells(line);
        if !(line.starts_with('|') && header.len() >= 3 && header[0] == "Flag" && header[1] == "Variable") {
            continue;
        }
        let default_col = header.iter().position(|h| h == "Default");
        let mut rows = Vec::new();
        while let Some(next) = lines.peek() {
            if !next.starts_with('|') {
                break;
            }
            let row = cells(lines.next().unwrap_or_default());
            if row.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':')) {
                continue;
            }
            rows.push(Row {
                flag: row.first().cloned().unwrap_or_default(),
                variable: row.get(1).cloned().unwrap_or_default(),
                default: default_col.map(|i| row.get(i).cloned().unwrap_or_default()),
            });
        }
        found.push(Table {
            file,
            heading: heading.clone(),
            rows,
        });
    }
    found
}

fn documents() -> Vec<Table> {
    let mut all = tables("README.md", include_str!("../README.md"));
    all.extend(tables("docs/gateway.md", include_str!("../docs/gateway.md")));
    all.extend(tables("docs/conformance.md", include_str!("../docs/conformance.md")));
    all
}

/// The verbs whose flags a table may list.
fn verbs_of(table: &Table) -> Vec<&'static str> {
    TABLES
        .iter()
        .filter(|(file, heading, _)| *file == table.file && *heading == table.heading)
        .map(|(_, _, verb)| *verb)
        .collect()
}

/// Checks one row against the flag it names; the problems found, each naming flag and table.
fn check_row(row: &Row, flag: &Flag, table: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let variables = quoted(&row.variable);
    match (&flag.env, variables.first()) {
        (Some(env), Some(first)) if first == env => {}
        (Some(env), _) => problems.push(format!(
            "{}: {table} gives the variable {:?}; clap reads `{env}`",
            flag.name, row.variable
        )),
        (None, _) => problems.push(format!("{}: has no variable in clap ({table})", flag.name)),
    }
    let Some(cell) = &row.default else {
        return problems;
    };
    let written = quoted(cell);
    let literal = written.len() == 1 && cell.trim() == format!("`{}`", written[0]);
    match &flag.default {
        Some(default) if literal && written[0] == default => {}
        Some(default) => problems.push(format!(
            "{}: {table} gives the default {cell:?}; clap's is `{default}`",
            flag.name
        )),
        None if literal => problems.push(format!(
            "{}: {table} gives the default {cell:?}, which reads as a value; clap has none (describe it in words)",
            flag.name
        )),
        None => {}
    }
    problems
}

#[test]
fn every_table_is_known_and_every_row_matches_clap() {
    let flags = clap_flags();
    let mut problems = Vec::new();
    for table in documents() {
        let verbs = verbs_of(&table);
        if verbs.is_empty() {
            problems.push(format!(
                "{}: no verb is assigned to this flag table (add it to TABLES)",
                table.name()
            ));
            continue;
        }
        if table.rows.is_empty() {
            problems.push(format!("{}: the table has no rows", table.name()));
        }
        for row in &table.rows {
            // A row with an empty Flag cell continues the one above: another variable for it.
            if row.flag.is_empty() {
                continue;
            }
            let Some(name) = quoted(&row.flag).first().and_then(|q| q.split_whitespace().next()) else {
                problems.push(format!("{}: a row names no flag: {:?}", table.name(), row.flag));
                continue;
            };
            let found = verbs
                .iter()
                .flat_map(|v| flags.get(*v).into_iter().flatten())
                .find(|f| f.name == name);
            match found {
                Some(flag) => problems.extend(check_row(row, flag, &table.name())),
                None => problems.push(format!(
                    "{name}: {} lists it, but {} has no such flag",
                    table.name(),
                    verbs.join(" / ")
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_flag_of_every_verb_is_in_its_tables() {
    let documents = documents();
    let mut problems = Vec::new();
    for (verb, flags) in clap_flags() {
        let places: Vec<&Table> = documents
            .iter()
            .filter(|t| verbs_of(t).contains(&verb.as_str()))
            .collect();
        let expected: Vec<String> = TABLES
            .iter()
            .filter(|(_, _, v)| *v == verb)
            .map(|(file, heading, _)| format!("{file} under {heading:?}"))
            .collect();
        if expected.is_empty() {
            problems.push(format!("{verb}: no table is assigned to this verb"));
            continue;
        }
        for flag in flags {
            let listed = places.iter().any(|t| {
                t.rows.iter().any(|r| {
                    quoted(&r.flag)
                        .first()
                        .and_then(|q| q.split_whitespace().next())
                        .is_some_and(|n| n == flag.name)
                })
            });
            if !listed {
                problems.push(format!(
                    "{}: `{verb}`'s flag is in none of {}",
                    flag.name,
                    expected.join(", ")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_flag_has_its_variable() {
    let mut problems = Vec::new();
    for (verb, flags) in clap_flags() {
        let prefix = match verb.as_str() {
            "probe" => "SOCKETLESS_PROBE_",
            "conformance" => "SOCKETLESS_CONFORMANCE_",
            _ => "SOCKETLESS_",
        };
        for flag in flags {
            match &flag.env {
                Some(env) if env.starts_with(prefix) => {}
                Some(env) => problems.push(format!(
                    "{verb} {}: its variable {env} does not start with {prefix}",
                    flag.name
                )),
                None => problems.push(format!("{verb} {}: has no variable", flag.name)),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_table_reader_reads_rows_and_quoted_text() {
    let text = "# T\n| Flag | Variable | Default | Meaning |\n|---|---|---|---|\n| `--a` | `SOCKETLESS_A` | `1` | x \\| y |\n| `--b` | `SOCKETLESS_B` | | z |\n\n```\n| Flag | Variable |\n```\n";
    let found = tables("t.md", text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].heading, "# T");
    let rows = &found[0].rows;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].flag.as_str(), rows[0].default.as_deref()),
        ("`--a`", Some("`1`"))
    );
    assert_eq!(rows[1].default.as_deref(), Some(""));
    assert_eq!(quoted("`a`, `b` and c"), vec!["a", "b"]);
    let flag = Flag {
        name: "--a".into(),
        env: Some("SOCKETLESS_A".into()),
        default: Some("2".into()),
    };
    let problems = check_row(&rows[0], &flag, "t.md");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("--a: t.md gives the default"), "{problems:?}");
}

/// Fails unless `text` contains every one of `needles`.
fn assert_contains_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "expected {needle:?} in {text}");
    }
}

/// Runs the binary with only `env` in its environment; (exit code, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_socketless"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn probe_reports_every_bad_setting_at_start() {
    // Nothing listens on this address; the probe must refuse before connecting anyway.
    let (code, err) = run(
        &["probe", "http://127.0.0.1:9/dev", "--header", "no-equals-sign"],
        &[("SOCKETLESS_PROBE_TIMEOUT", "soon")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert_contains_all(
        &err,
        &[
            "3 invalid setting(s)",
            "URL (SOCKETLESS_PROBE_URL): \"http://127.0.0.1:9/dev\" must start with ws:// or wss://",
            "--timeout (SOCKETLESS_PROBE_TIMEOUT): \"soon\" is not a duration",
            "--header (SOCKETLESS_PROBE_HEADER): \"no-equals-sign\" is not Name=Value",
        ],
    );
    assert!(!err.contains("cannot connect"), "{err}");
}

#[test]
fn conformance_reports_every_bad_setting_at_start() {
    let (code, err) = run(
        &[
            "conformance",
            "--url",
            "ws://127.0.0.1:9",
            "--connections",
            "ftp://127.0.0.1:9/dev",
            "--wait",
            "0s",
            "--only",
            "no-such-case",
        ],
        &[("SOCKETLESS_CONFORMANCE_IDLE_TIMEOUT", "soon")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert_contains_all(
        &err,
        &[
            "5 invalid setting(s)",
            "--url (SOCKETLESS_CONFORMANCE_URL): \"ws://127.0.0.1:9\" names no stage",
            "--connections (SOCKETLESS_CONFORMANCE_CONNECTIONS): \"ftp://127.0.0.1:9/dev\" is not an http:// or https:// URL",
            "--wait (SOCKETLESS_CONFORMANCE_WAIT): must be more than zero",
            "--only (SOCKETLESS_CONFORMANCE_ONLY): \"no-such-case\" names no case",
            "--idle-timeout (SOCKETLESS_CONFORMANCE_IDLE_TIMEOUT): \"soon\" is not a duration",
        ],
    );
    // No case ran.
    assert!(!err.contains("passed"), "{err}");
}

//! Runs the whole benchmark suite and writes `BENCHMARKS.md`:
//!
//! ```sh
//! cargo run -p ovation-tests --bin benchmarks            # every bench
//! cargo run -p ovation-tests --bin benchmarks -- endpoint call   # some of them
//! ```
//!
//! Each bench (`tests/benches/*.rs`) runs with `cargo bench`, prints its own figures, and
//! appends them, each with the baseline it was measured against in the same run and its
//! target, to a report file; this collects them into one table, on the terminal and in
//! `BENCHMARKS.md` at the workspace's root (rewritten only by a run of the whole suite).

use std::path::Path;
use std::process::{Command, ExitCode};

use ovation_tests::report::{Figure, REPORT_ENV, number};

/// Every bench, in the order of the table.
const BENCHES: [&str; 9] = [
    "endpoint",
    "call",
    "cache",
    "workflow",
    "rpc",
    "orderflow",
    "pubsub",
    "provision",
    "compile",
];

fn main() -> ExitCode {
    let chosen: Vec<String> = std::env::args().skip(1).collect();
    if let Some(unknown) = chosen.iter().find(|c| !BENCHES.contains(&c.as_str())) {
        eprintln!(
            "benchmarks: no bench named {unknown:?}; the benches are: {}",
            BENCHES.join(", ")
        );
        return ExitCode::from(2);
    }
    let whole = chosen.is_empty();
    let benches: Vec<&str> = BENCHES
        .iter()
        .copied()
        .filter(|b| whole || chosen.iter().any(|c| c == b))
        .collect();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let report = std::env::temp_dir().join(format!("ovation-bench-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&report);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut failed = Vec::new();
    for bench in &benches {
        println!("== cargo bench --bench {bench}");
        let status = Command::new(&cargo)
            .args([
                "bench",
                "-p",
                "ovation-tests",
                "--bench",
                bench,
                "--manifest-path",
            ])
            .arg(workspace.join("Cargo.toml"))
            .env(REPORT_ENV, &report)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => failed.push(format!("{bench} ({s})")),
            Err(e) => failed.push(format!("{bench} (could not run cargo: {e})")),
        }
    }
    let figures: Vec<Figure> = std::fs::read_to_string(&report)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let _ = std::fs::remove_file(&report);
    let table = markdown(&figures);
    println!("\n{table}");
    if whole && failed.is_empty() {
        let page = page(&table);
        let path = workspace.join("BENCHMARKS.md");
        if let Err(e) = std::fs::write(&path, page) {
            eprintln!("benchmarks: could not write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("written to {}", path.display());
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("benchmarks: these benches failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

/// The figures as one Markdown table per section.
fn markdown(figures: &[Figure]) -> String {
    let mut out = String::new();
    let mut sections: Vec<&str> = Vec::new();
    for f in figures {
        if !sections.contains(&f.section.as_str()) {
            sections.push(&f.section);
        }
    }
    for section in sections {
        out.push_str(&format!(
            "### {section}\n\n| figure | value | baseline (same run) | baseline value | ratio | target | met |\n|---|---:|---|---:|---:|---|---|\n"
        ));
        for f in figures.iter().filter(|f| f.section == section) {
            let unit = |v: f64| format!("{} {}", number(v), f.unit).trim_end().to_owned();
            let (base_name, base_value) = f
                .baseline
                .as_ref()
                .map_or((String::new(), String::new()), |b| {
                    (b.name.clone(), unit(b.value))
                });
            let ratio = f.ratio().map(|r| format!("{r:.2}")).unwrap_or_default();
            let met = match f.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            out.push_str(&format!(
                "| {} | {} | {base_name} | {base_value} | {ratio} | {} | {met} |\n",
                f.name,
                unit(f.value),
                f.target_text()
            ));
        }
        out.push('\n');
    }
    out
}

fn page(table: &str) -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "# Benchmarks\n\n\
         Written by `cargo run -p ovation-tests --bin benchmarks` on {date}: do not edit \
         by hand, run it again. Machine: {cores} cores, shared by the load driver, the servers \
         and Postgres; {rustc}. Every ratio is against a baseline measured in the same run; \
         what each bench does is in its file under `tests/benches/`.\n\n{table}"
    )
}

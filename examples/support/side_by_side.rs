//! The side-by-side examples' runner: each case through each contestant,
//! a Markdown table of what each did, and exit status 1 if the first
//! contestant (ours) missed a case.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// One case's check against one contestant: why it was missed, if it was.
pub(crate) type Check = Pin<Box<dyn Future<Output = Result<(), String>>>>;

/// One case: what it checks, where a standard asks for it (empty where
/// the table has no such column), and its check against the named
/// contestant.
pub(crate) struct Case {
    pub(crate) what: &'static str,
    pub(crate) refs: &'static str,
    pub(crate) run: fn(&'static str) -> Check,
}

/// How long one case may take before it counts as hung.
const CASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs every case through every contestant in `names` (ours first),
/// prints the table (with a `refs` column headed `refs_title`, if given)
/// and exits 1 if ours missed any case.
pub(crate) async fn run(refs_title: Option<&str>, names: &[&'static str], cases: &[Case]) {
    let mut table = String::from("| case |");
    let mut rule = String::from("|---|");
    if let Some(title) = refs_title {
        let _ = write!(table, " {title} |");
        rule.push_str("---|");
    }
    for name in names {
        let _ = write!(table, " {name} |");
        rule.push_str("---|");
    }
    let _ = writeln!(table, "\n{rule}");
    let mut ours_missed = Vec::new();
    let mut met = vec![0usize; names.len()];
    for case in cases {
        let _ = write!(table, "| {} |", case.what);
        if refs_title.is_some() {
            let _ = write!(table, " {} |", case.refs);
        }
        for (i, name) in names.iter().enumerate() {
            let outcome = tokio::time::timeout(CASE_TIMEOUT, (case.run)(name))
                .await
                .unwrap_or_else(|_| Err("hung".into()));
            match outcome {
                Ok(()) => {
                    met[i] += 1;
                    table.push_str(" yes |");
                }
                Err(why) => {
                    if i == 0 {
                        ours_missed.push(format!("{}: {why}", case.what));
                    }
                    let _ = write!(table, " no ({why}) |");
                }
            }
        }
        table.push('\n');
    }
    table.push_str("| **cases met** |");
    if refs_title.is_some() {
        table.push_str(" |");
    }
    for n in met {
        let _ = write!(table, " {n} of {} |", cases.len());
    }
    println!("{table}");
    if !ours_missed.is_empty() {
        eprintln!("{} missed: {ours_missed:#?}", names[0]);
        std::process::exit(1);
    }
}

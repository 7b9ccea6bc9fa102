//! What every lab shares: its size, and where its one-line result goes.

/// `LABS_SCALE=full`: the lab at full size (`make labs`); otherwise the CI size.
pub fn full() -> bool {
    std::env::var("LABS_SCALE").is_ok_and(|v| v == "full")
}

/// Print a lab's result line, and append it to `LABS_REPORT` when set (`make labs` and
/// `make labs-cluster` print the collected lines at the end).
pub fn report(line: String) {
    println!("{line}");
    if let Ok(path) = std::env::var("LABS_REPORT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

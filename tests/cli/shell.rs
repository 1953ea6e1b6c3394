//! The seed's session, in the interactive shell and as one-shot commands.

use crate::util::*;

const SEED_SESSION: &str = "create test_synchronization.txt
write test_synchronization.txt --random 40
read test_synchronization.txt
delete test_synchronization.txt
write file1 --random 5
table
exit
";

/// The 40 (or 5) random letters a `write --random` printed: the longest all-lowercase word.
fn letters(out: &str, n: usize) -> Vec<String> {
    out.split(|c: char| !c.is_ascii_lowercase())
        .filter(|w| w.len() == n)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_seed_session_works_in_the_shell() {
    let s = Server::start();
    let out = s.cli_stdin(&[], SEED_SESSION.as_bytes());
    let stdout = ok(&out);
    // What write printed is what read returned.
    let words = letters(&stdout, 40);
    assert!(
        words.len() >= 2,
        "written and read letters expected in: {stdout}"
    );
    assert_eq!(
        words[0], words[1],
        "read returned other letters than written"
    );
    // The table shows file1 (and not the deleted file) on node 1.
    assert!(stdout.contains("file1"), "{stdout}");
    let table = json(&s.cli(&["--json", "table"]));
    assert_eq!(table, serde_json::json!({"file1": [1]}));
    assert_eq!(ok(&s.cli(&["read", "file1"])).len(), 5);
}

#[test]
fn the_shell_reports_errors_and_goes_on() {
    let s = Server::start();
    let script = "read missing\ncreate ../x\nwrite ok.txt 'two words'\nread ok.txt\nexit\n";
    let out = s.cli_stdin(&[], script.as_bytes());
    let stdout = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not found"), "{stderr}");
    assert!(stderr.contains("'..'"), "{stderr}");
    assert!(stdout.contains("two words"), "{stdout}");
    assert_eq!(ok(&s.cli(&["read", "ok.txt"])), "two words");
}

#[test]
fn the_seed_session_works_as_one_shot_commands() {
    let s = Server::start();
    ok(&s.cli(&["create", "test_synchronization.txt"]));
    let written = ok(&s.cli(&["write", "test_synchronization.txt", "--random", "40"]));
    let read = ok(&s.cli(&["read", "test_synchronization.txt"]));
    assert_eq!(read.len(), 40);
    assert!(written.contains(&read), "{written} vs {read}");
    ok(&s.cli(&["delete", "test_synchronization.txt"]));
    ok(&s.cli(&["write", "file1", "--random", "5"]));
    let table = ok(&s.cli(&["table"]));
    assert!(
        table.contains("file1") && !table.contains("test_synchronization"),
        "{table}"
    );
}

//! `myqueue-broker hash-token [TOKEN|-]`: the auth file's entry for a token. Without a token,
//! a new one is made from 32 bytes of the operating system's randomness; `-` reads the token
//! from stdin (it then stays out of the shell's history and the process list).

use super::token::{self, TokenHash};
use std::io::BufRead;
use std::process::ExitCode;

pub fn run(given: Option<String>) -> ExitCode {
    let (token, new) = match given.as_deref() {
        Some("-") => {
            let mut line = String::new();
            if let Err(err) = std::io::stdin().lock().read_line(&mut line) {
                eprintln!("myqueue-broker hash-token: cannot read stdin: {err}");
                return ExitCode::FAILURE;
            }
            (line.trim().to_owned(), false)
        }
        Some(token) => (token.trim().to_owned(), false),
        None => match token::generate() {
            Ok(token) => (token, true),
            Err(err) => {
                eprintln!("myqueue-broker hash-token: no randomness from the system: {err}");
                return ExitCode::FAILURE;
            }
        },
    };
    if token.is_empty() {
        eprintln!("myqueue-broker hash-token: the token is empty");
        return ExitCode::FAILURE;
    }
    if new {
        println!(
            "# A new token (32 random bytes from the operating system). Give it to the client"
        );
        println!("# (MYQUEUE_TOKEN=... or token=...); the broker keeps only its hash, below.");
        println!("# token: {token}");
    }
    println!("# For --auth-file (name the table, then list what the token may do):");
    println!("[tokens.NAME]");
    println!("sha256 = \"{}\"", TokenHash::of(&token).to_hex());
    println!("produce = []   # topic names, \"prefix.*\" or \"*\"");
    println!("consume = []");
    println!("admin = false  # create, change and delete topics");
    println!("monitor = false  # /metrics and the dashboard");
    ExitCode::SUCCESS
}

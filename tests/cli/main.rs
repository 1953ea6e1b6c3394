//! End-to-end tests: real `dfs-server` processes on free loopback ports, driven by the real
//! `dfs-client` binary and by the client library.

mod bad_input;
mod bench;
mod cli;
mod cluster;
mod crash;
mod faults;
mod fsx;
mod harness;
mod heal;
mod history;
mod library;
mod lock_faults;
mod locks;
mod mount;
mod offsets;
mod security;
mod shell;
mod util;

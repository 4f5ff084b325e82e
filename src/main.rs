mod cli;
mod config;
mod zonefile;
fn main() {}

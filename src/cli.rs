//! The command line: what `ddserver` accepts. Parsing only; `main.rs` runs it.
//!
//! Secrets (passwords, update secrets) are read from standard input
//! (`--password-stdin`), never from arguments: arguments are visible to every
//! user of the machine in `ps` and end up in shell histories.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ddserver",
    version,
    about = "Dynamic DNS service: updater, web UI and authoritative DNS responder"
)]
pub(crate) struct Cli {
    /// Configuration file (default: ddserver.toml in the working directory if
    /// present, else built-in defaults). DDSERVER_<SECTION>_<KEY> environment
    /// variables override it.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "DDSERVER_CONFIG",
        value_name = "FILE"
    )]
    pub(crate) config: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run every part in one process on the configured addresses.
    Serve,
    /// Run the authoritative DNS responder alone.
    Responder,
    /// Run the dyndns2 updater alone.
    Updater,
    /// Apply the database migrations and exit.
    Migrate,
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig,
    /// Manage zones.
    #[command(subcommand)]
    Zone(ZoneCommand),
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage hosts.
    #[command(subcommand)]
    Host(HostCommand),
    /// Print the newest audit-log entries, newest first.
    Audit {
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ZoneCommand {
    /// Create a dynamic zone.
    Add {
        /// The zone's name, e.g. dyn.example.net (Unicode is accepted).
        name: String,
        /// The zone's name servers (at least one); the first is the SOA's primary.
        #[arg(long = "ns", required = true, num_args = 1..)]
        ns: Vec<String>,
        /// TTL of host records in seconds (default: [hosts] default_ttl).
        #[arg(long)]
        ttl: Option<u32>,
        /// The SOA's responsible mailbox, as an e-mail address or a DNS name
        /// (default: hostmaster.<zone>).
        #[arg(long = "soa-rname")]
        soa_rname: Option<String>,
    },
    /// List zones.
    List,
    /// Remove a zone with all its hosts and records.
    Remove { name: String },
    /// Print the zone as an RFC 1035 master file, exactly as served.
    Export { name: String },
    /// Load a zone's SOA, NS set and static records from a master file;
    /// creates the zone if it does not exist.
    Import {
        /// The master file.
        file: PathBuf,
        /// The zone's origin if the file has no $ORIGIN (default: the owner
        /// of the file's SOA record).
        #[arg(long)]
        origin: Option<String>,
        /// Keep the zone's existing static records and add these to them
        /// (default: replace them).
        #[arg(long)]
        merge: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create an active account.
    Add {
        name: String,
        #[arg(long)]
        email: String,
        /// Make the account an administrator.
        #[arg(long)]
        admin: bool,
        /// Hosts this account may own (default: [hosts] default_max_hosts).
        #[arg(long = "max-hosts")]
        max_hosts: Option<u32>,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// List accounts.
    List,
    /// Disable an account (its hosts stop accepting updates).
    Disable { name: String },
    /// Enable a disabled or pending account.
    Enable { name: String },
    /// Remove an account and all its hosts.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum HostCommand {
    /// Create a host inside a zone.
    Add {
        /// The host's full name, e.g. myrouter.dyn.example.net.
        fqdn: String,
        /// The account that owns it.
        #[arg(long)]
        user: String,
        #[arg(long)]
        ipv4: Option<std::net::Ipv4Addr>,
        #[arg(long)]
        ipv6: Option<std::net::Ipv6Addr>,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// List hosts.
    List {
        #[arg(long)]
        zone: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
    /// Change a host's switches.
    Set {
        fqdn: String,
        /// Also answer for every name below the host.
        #[arg(long, value_parser = on_off)]
        wildcard: Option<bool>,
        /// Serve no address records until the next update.
        #[arg(long, value_parser = on_off)]
        offline: Option<bool>,
        /// Refuse updates and serve no addresses, giving this reason.
        #[arg(long, conflicts_with = "enable", value_name = "REASON")]
        disable: Option<String>,
        /// Lift an administrator's --disable.
        #[arg(long)]
        enable: bool,
    },
    /// Remove a host.
    Remove { fqdn: String },
    /// Refuse the host's updates (answered `abuse`) and stop serving it.
    Disable {
        fqdn: String,
        /// Why, for the owner and the audit log.
        #[arg(long, default_value = "disabled by an administrator")]
        reason: String,
    },
    /// Accept the host's updates again.
    Enable { fqdn: String },
    /// Replace the host's update secret (cached verifications of the old
    /// one stop matching at once).
    Secret {
        fqdn: String,
        #[command(flatten)]
        secret: SecretArgs,
    },
}

/// `on`/`off` (also yes/no, true/false) for switches.
fn on_off(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(format!("'{text}' is not on or off")),
    }
}

#[derive(Debug, Args)]
pub(crate) struct SecretArgs {
    /// Read the password or update secret from the first line of standard
    /// input (default: generate one and print it once).
    #[arg(long = "password-stdin")]
    pub(crate) password_stdin: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}

//! The administrative commands (`zone`, `user`, `host`): thin translations
//! from arguments to store calls. Every command exits 0 only after its
//! transaction committed; every error is printed once, in words, with a
//! non-zero exit.

use std::io::BufRead;

use anyhow::{Context, Result, anyhow, bail};
use ddserver_store::{
    Actor, HostFilter, HostFlags, Name, NewHost, NewRecord, NewUser, NewZone, RecordType, Role,
    SoaTimers, Store, UserState,
};

use crate::cli::{HostCommand, SecretArgs, UserCommand, ZoneCommand};
use crate::config::Config;
use crate::zonefile;

/// Parses a name typed by an administrator, with the argument's role in the
/// error message.
fn name(what: &str, text: &str) -> Result<Name> {
    // The name error quotes the name itself; say only which argument it was.
    Name::parse(text).map_err(|e| anyhow!("{what}: {e}"))
}

/// Reads a secret from the first line of standard input, or generates one
/// (returned as `(secret, generated)`).
fn secret(args: &SecretArgs) -> Result<(String, bool)> {
    if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            bail!("--password-stdin: standard input held no password");
        }
        Ok((line, false))
    } else {
        Ok((generate_secret(), true))
    }
}

/// A random secret of 120 bits, as 24 characters a person can type and a
/// router accepts (no symbols that need escaping in a URL or a form).
pub(crate) fn generate_secret() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(24);
    let mut bytes = [0u8; 64];
    while out.len() < 24 {
        getrandom::fill(&mut bytes).expect("the operating system provides randomness");
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - 256 % ALPHABET.len();
        for &b in &bytes {
            if (b as usize) < limit && out.len() < 24 {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    out
}

pub(crate) async fn zone(store: &Store, config: &Config, command: ZoneCommand) -> Result<()> {
    let actor = Actor::cli();
    match command {
        ZoneCommand::Add {
            name: zone_name,
            ns,
            ttl,
            soa_rname,
        } => {
            let zone_name = name("zone", &zone_name)?;
            let ns = ns
                .iter()
                .map(|n| name("name server", n))
                .collect::<Result<Vec<_>>>()?;
            let soa_rname = soa_rname.map(|r| mailbox(&r)).transpose()?;
            let mut new = NewZone::new(zone_name, ns);
            new.soa_rname = soa_rname;
            new.default_ttl = ttl.unwrap_or(config.hosts.default_ttl);
            if !(1..=86400).contains(&new.default_ttl) {
                bail!("--ttl {} is outside 1..=86400 seconds", new.default_ttl);
            }
            let zone = store.add_zone(&actor, new).await?;
            println!(
                "zone {} added (serial {}, NS {})",
                zone.name.to_unicode(),
                zone.serial,
                zone.ns
                    .iter()
                    .map(Name::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        ZoneCommand::List => {
            let zones = store.list_zones().await?;
            println!("{:<40} {:>10} {:>6}  NS", "ZONE", "SERIAL", "TTL");
            for zone in zones {
                println!(
                    "{:<40} {:>10} {:>6}  {}",
                    zone.name.to_unicode(),
                    zone.serial,
                    zone.default_ttl,
                    zone.ns
                        .iter()
                        .map(Name::as_str)
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
        }
        ZoneCommand::Remove { name: zone_name } => {
            let zone_name = name("zone", &zone_name)?;
            store.remove_zone(&actor, &zone_name).await?;
            println!("zone {} removed", zone_name.to_unicode());
        }
        ZoneCommand::Export { name: zone_name } => {
            let zone_name = name("zone", &zone_name)?;
            let text = crate::serve::export_zone(store, &zone_name).await?;
            print!("{text}");
        }
        ZoneCommand::Import {
            file,
            origin,
            merge,
        } => {
            let parsed =
                tokio::task::spawn_blocking(move || zonefile::read(&file, origin.as_deref()))
                    .await
                    .context("the zone file reader stopped")??;
            let zone_name = name("zone", &parsed.name)?;
            let ns = parsed
                .ns
                .iter()
                .map(|n| name("name server", n))
                .collect::<Result<Vec<_>>>()?;
            let mut new = NewZone::new(zone_name.clone(), ns);
            new.soa_rname = Some(name("SOA RNAME", &parsed.soa.rname)?);
            new.timers = SoaTimers {
                refresh: parsed.soa.refresh,
                retry: parsed.soa.retry,
                expire: parsed.soa.expire,
                minimum: parsed.soa.minimum,
                soa_ttl: parsed.soa.ttl,
            };
            new.default_ttl = config.hosts.default_ttl;
            let mut records = Vec::with_capacity(parsed.records.len());
            for record in parsed.records {
                let rtype = RecordType::parse(&record.rtype.to_string())
                    .with_context(|| format!("record type {} is not supported", record.rtype))?;
                records.push(NewRecord {
                    owner: name("record owner", &record.owner)?,
                    rtype,
                    ttl: Some(record.ttl),
                    rdata: record.rdata,
                });
            }
            let count = records.len();
            store.import_zone(&actor, new, records, !merge).await?;
            println!(
                "zone {} imported: {count} static records{}",
                zone_name.to_unicode(),
                if merge { " added" } else { "" }
            );
        }
    }
    Ok(())
}

/// Accepts a responsible mailbox as an e-mail address (`hostmaster@example.org`,
/// RFC 1035 §8 turns the `@` into the first dot) or as a DNS name.
fn mailbox(text: &str) -> Result<Name> {
    let dns_form = match text.split_once('@') {
        Some((local, domain)) => {
            if local.contains('.') {
                bail!(
                    "--soa-rname '{text}': a mailbox whose local part contains a dot cannot be written as a DNS name here"
                );
            }
            format!("{local}.{domain}")
        }
        None => text.to_string(),
    };
    name("--soa-rname", &dns_form)
}

pub(crate) async fn user(store: &Store, config: &Config, command: UserCommand) -> Result<()> {
    let actor = Actor::cli();
    match command {
        UserCommand::Add {
            name: user_name,
            email,
            admin,
            max_hosts,
            secret: secret_args,
        } => {
            let (password, generated) = secret(&secret_args)?;
            let user = store
                .create_user(
                    &actor,
                    NewUser {
                        name: user_name,
                        email,
                        password: Some(password.clone()),
                        role: if admin { Role::Admin } else { Role::User },
                        state: UserState::Active,
                        max_hosts,
                    },
                )
                .await?;
            println!("user {} added ({})", user.name, user.role);
            if generated {
                println!("password: {password}");
                println!("(shown once; it is stored only as an argon2id hash)");
            }
        }
        UserCommand::List => {
            let users = store.list_users().await?;
            println!(
                "{:<24} {:<32} {:<6} {:<9} {:>9}",
                "USER", "E-MAIL", "ROLE", "STATE", "MAX-HOSTS"
            );
            for user in users {
                let limit = match user.max_hosts {
                    Some(n) => n.to_string(),
                    None if config.hosts.default_max_hosts == 0 => "default:-".to_string(),
                    None => format!("default:{}", config.hosts.default_max_hosts),
                };
                println!(
                    "{:<24} {:<32} {:<6} {:<9} {:>9}",
                    user.name, user.email, user.role, user.state, limit
                );
            }
        }
        UserCommand::Disable { name: user_name } => {
            store
                .set_user_state(&actor, &user_name, UserState::Disabled)
                .await?;
            println!("user {user_name} disabled");
        }
        UserCommand::Enable { name: user_name } => {
            store
                .set_user_state(&actor, &user_name, UserState::Active)
                .await?;
            println!("user {user_name} enabled");
        }
        UserCommand::Remove { name: user_name } => {
            store.remove_user(&actor, &user_name).await?;
            println!("user {user_name} removed with all their hosts");
        }
    }
    Ok(())
}

pub(crate) async fn host(store: &Store, config: &Config, command: HostCommand) -> Result<()> {
    let actor = Actor::cli();
    match command {
        HostCommand::Add {
            fqdn,
            user,
            ipv4,
            ipv6,
            secret: secret_args,
        } => {
            let fqdn = name("host", &fqdn)?;
            let (secret, generated) = secret(&secret_args)?;
            let host = store
                .add_host(
                    &actor,
                    NewHost {
                        fqdn,
                        owner: user,
                        secret: secret.clone(),
                        ipv4,
                        ipv6,
                        description: String::new(),
                    },
                    default_limit(config),
                )
                .await?;
            println!(
                "host {} added in zone {} for {}",
                host.fqdn.to_unicode(),
                host.zone.to_unicode(),
                host.owner
            );
            if generated {
                println!("update secret: {secret}");
                println!("(shown once; it is stored only as an argon2id hash)");
            }
        }
        HostCommand::List { zone, user } => {
            let filter = HostFilter {
                zone: zone.map(|z| name("zone", &z)).transpose()?,
                owner: user,
            };
            let hosts = store.list_hosts(filter).await?;
            println!(
                "{:<40} {:<16} {:<16} {:<39} FLAGS",
                "HOST", "OWNER", "IPV4", "IPV6"
            );
            for host in hosts {
                let mut flags = Vec::new();
                if host.flags.wildcard {
                    flags.push("wildcard".to_string());
                }
                if host.flags.offline {
                    flags.push("offline".to_string());
                }
                if let Some(reason) = &host.flags.disabled {
                    flags.push(format!("disabled ({reason})"));
                }
                println!(
                    "{:<40} {:<16} {:<16} {:<39} {}",
                    host.fqdn.to_unicode(),
                    host.owner,
                    host.ipv4
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "-".into()),
                    host.ipv6
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "-".into()),
                    flags.join(",")
                );
            }
        }
        HostCommand::Set {
            fqdn,
            wildcard,
            offline,
            disable,
            enable,
        } => {
            let fqdn = name("host", &fqdn)?;
            let host = store
                .host_by_fqdn(&fqdn)
                .await?
                .with_context(|| format!("host {} does not exist", fqdn.to_unicode()))?;
            let mut flags = host.flags;
            if let Some(wildcard) = wildcard {
                flags.wildcard = wildcard;
            }
            if let Some(offline) = offline {
                flags.offline = offline;
            }
            if let Some(reason) = disable {
                if reason.trim().is_empty() {
                    bail!("--disable needs a reason the owner will see");
                }
                flags.disabled = Some(reason);
            }
            if enable {
                flags.disabled = None;
            }
            store.set_host_flags(&actor, &fqdn, flags.clone()).await?;
            println!(
                "host {}: wildcard {}, offline {}, {}",
                fqdn.to_unicode(),
                if flags.wildcard { "on" } else { "off" },
                if flags.offline { "on" } else { "off" },
                match &flags.disabled {
                    Some(reason) => format!("disabled ({reason})"),
                    None => "enabled".into(),
                }
            );
        }
        HostCommand::Remove { fqdn } => {
            let fqdn = name("host", &fqdn)?;
            store.remove_host(&actor, &fqdn).await?;
            println!("host {} removed", fqdn.to_unicode());
        }
        HostCommand::Disable { fqdn, reason } => {
            set_disabled(store, &actor, &fqdn, Some(reason)).await?;
        }
        HostCommand::Enable { fqdn } => set_disabled(store, &actor, &fqdn, None).await?,
        HostCommand::Secret {
            fqdn,
            secret: secret_args,
        } => {
            let fqdn = name("host", &fqdn)?;
            let (secret, generated) = secret(&secret_args)?;
            store.set_host_secret(&actor, &fqdn, secret.clone()).await?;
            println!("update secret of {} replaced", fqdn.to_unicode());
            if generated {
                println!("update secret: {secret}");
                println!("(shown once; it is stored only as an argon2id hash)");
            }
        }
    }
    Ok(())
}

/// Sets or clears a host's `disabled` flag, keeping its other flags.
async fn set_disabled(
    store: &Store,
    actor: &Actor,
    fqdn: &str,
    reason: Option<String>,
) -> Result<()> {
    let fqdn = name("host", fqdn)?;
    let host = store
        .host_by_fqdn(&fqdn)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no host '{}'", fqdn.to_unicode()))?;
    let disabled = reason.is_some();
    let flags = HostFlags {
        disabled: reason,
        ..host.flags
    };
    store.set_host_flags(actor, &fqdn, flags).await?;
    println!(
        "host {} {}",
        fqdn.to_unicode(),
        if disabled { "disabled" } else { "enabled" }
    );
    Ok(())
}

/// `ddserver audit`: the newest entries, newest first, one per line.
pub(crate) async fn audit(store: &Store, limit: u32) -> Result<()> {
    for entry in store.recent_audit(limit).await? {
        println!(
            "{} {} {} {} {} {}",
            entry.at,
            entry.actor,
            entry.address.as_deref().unwrap_or("-"),
            entry.action,
            entry.target,
            entry.detail
        );
    }
    Ok(())
}

/// The configured per-user host limit; 0 means unlimited.
pub(crate) fn default_limit(config: &Config) -> Option<u32> {
    (config.hosts.default_max_hosts != 0).then_some(config.hosts.default_max_hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_long_and_distinct() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn mailbox_forms() {
        assert_eq!(
            mailbox("hostmaster@example.org").unwrap().as_str(),
            "hostmaster.example.org"
        );
        assert_eq!(
            mailbox("hostmaster.example.org").unwrap().as_str(),
            "hostmaster.example.org"
        );
        assert!(mailbox("first.last@example.org").is_err());
    }
}

//! `repro audit verify|export`. How the other commands write their audit
//! entries is [`repro_evidence::audit::log`].

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use repro_store::Store;

use repro_evidence::audit::{self};
use repro_evidence::exit::UserError;
use repro_evidence::syslog::{self, Facility};

/// `repro audit ...`.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the whole log: chain, sequence, signatures and head; name every entry that was edited, deleted, inserted or reordered
    Verify {
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write the entries as JSON lines or RFC 5424 syslog messages, to stdout, a file or a syslog server over TCP
    Export(ExportArgs),
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The entries exactly as written, one per line.
    Jsonl,
    /// RFC 5424 messages (octet-counted over TCP, one per line in a file).
    Syslog,
}

/// `repro audit export`.
#[derive(Args)]
pub struct ExportArgs {
    /// The format
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Write to this file (replacing it) instead of stdout
    #[arg(long, value_name = "FILE", conflicts_with = "tcp")]
    output: Option<PathBuf>,
    /// Send to a syslog server over TCP (RFC 6587 octet counting); needs `--format syslog`
    #[arg(long, value_name = "HOST:PORT")]
    tcp: Option<String>,
    /// Only entries after this sequence number (the last one exported before)
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    since: u64,
    /// The syslog facility
    #[arg(long, value_enum, default_value = "authpriv")]
    facility: Facility,
}

/// Run `repro audit ...`; returns the exit code.
/// `repro audit` only reads the log.
pub const STORE: super::StoreUse = super::StoreUse::Open;

/// Run `repro audit`.
pub fn run(ctx: &super::Ctx, cmd: AuditCommand) -> Result<u8> {
    let store = &*ctx.store()?;
    let quiet = ctx.quiet;
    let cmd = &cmd;
    match cmd {
        AuditCommand::Verify { json } => {
            let v = audit::verify(store)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if v.intact {
                if !quiet {
                    println!(
                        "the audit log is intact: {} entries, chain, signatures and head check out",
                        v.last_seq
                    );
                }
            } else {
                for p in &v.problems {
                    println!("{}", p.message);
                }
                eprintln!(
                    "error: the audit log `{}` was tampered with ({} problem{})",
                    v.log,
                    v.problems.len(),
                    if v.problems.len() == 1 { "" } else { "s" }
                );
            }
            Ok(if v.intact {
                repro_evidence::exit::OK
            } else {
                repro_evidence::exit::CANNOT
            })
        }
        AuditCommand::Export(args) => export(store, quiet, args),
    }
}

fn export(store: &Store, quiet: bool, args: &ExportArgs) -> Result<u8> {
    if args.tcp.is_some() && args.format != Format::Syslog {
        return Err(
            UserError("`--tcp` sends syslog messages\nhint: add `--format syslog`".into()).into(),
        );
    }
    let entries: Vec<_> = audit::entries(store)?
        .into_iter()
        .filter(|(_, e)| e.seq > args.since)
        .collect();
    let origin = syslog::Origin::this_process();
    let messages: Vec<String> = entries
        .iter()
        .map(|(line, e)| match args.format {
            Format::Jsonl => line.clone(),
            Format::Syslog => syslog::format(e, args.facility, &origin),
        })
        .collect();
    let target = if let Some(addr) = &args.tcp {
        let mut conn = std::net::TcpStream::connect(addr).with_context(|| {
            format!("cannot connect to the syslog server `{addr}`\nhint: is it listening on TCP?")
        })?;
        for m in &messages {
            conn.write_all(syslog::frame(m).as_bytes())
                .with_context(|| format!("cannot send to `{addr}`"))?;
        }
        conn.flush()
            .with_context(|| format!("cannot send to `{addr}`"))?;
        conn.shutdown(std::net::Shutdown::Write)
            .with_context(|| format!("cannot close the connection to `{addr}`"))?;
        format!("`{addr}`")
    } else {
        let mut text = String::new();
        for m in &messages {
            text.push_str(m);
            text.push('\n');
        }
        match &args.output {
            Some(path) => {
                std::fs::write(path, text)
                    .with_context(|| format!("cannot write `{}`", path.display()))?;
                format!("`{}`", path.display())
            }
            None => {
                std::io::stdout()
                    .write_all(text.as_bytes())
                    .context("cannot write to stdout")?;
                "stdout".to_string()
            }
        }
    };
    if !quiet {
        match (entries.first(), entries.last()) {
            (Some((_, a)), Some((_, b))) => eprintln!(
                "exported entries {} to {} to {target}; next time pass `--since {}`",
                a.seq, b.seq, b.seq
            ),
            _ => eprintln!("no entries after {} to export", args.since),
        }
    }
    Ok(repro_evidence::exit::OK)
}

//! `repro audit verify|checkpoint|export`. How the other commands write
//! their audit entries is [`repro_evidence::audit::log`]; the signed
//! checkpoints of the head are [`repro_evidence::audit::Checkpoint`].

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use repro_store::Store;

use repro_evidence::audit::{self, Checkpoint, ProblemKind};
use repro_evidence::exit::UserError;
use repro_evidence::keys::{self, Envelope};
use repro_evidence::syslog::{self, Facility};
use repro_evidence::{attest, env_vars};

/// `repro audit ...`.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the whole log: chain, sequence, signatures and head; name every entry that was edited, deleted, inserted or reordered; with checkpoints kept elsewhere, also a truncated or rewritten log
    Verify {
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
        /// The log must hold this entry: `<seq>:<sha256 hex>` as `repro audit checkpoint` prints it (repeatable)
        #[arg(long = "expect-head", value_name = "SEQ:HEX")]
        expect_head: Vec<Checkpoint>,
        /// A signed checkpoint kept outside the store: the output of `repro audit checkpoint`, or an export (JSON lines or syslog) whose checkpoints are all checked (repeatable)
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
    },
    /// Sign a checkpoint of the log's head (sequence number and hash of the last entry, time, signer) to keep outside the store
    Checkpoint {
        /// Your signing key [default: as for `build`]
        #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Write to this file (outside the store) instead of stdout
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write the entries as JSON lines or RFC 5424 syslog messages, to stdout, a file or a syslog server over TCP, ending with a signed checkpoint of the head
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
    /// The key that signs the checkpoint ending the export [default: as for `build`]
    #[arg(long, env = env_vars::REPRO_KEY, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Only the entries, without the signed checkpoint of the head at the end
    #[arg(long)]
    no_checkpoint: bool,
}

/// `repro audit` reads the log without the store lock; `checkpoint` and
/// `export` add their signer's public key (a blob, written once) so that
/// the checkpoint can be checked with the store's keys.
pub fn store_use(cmd: &AuditCommand) -> super::StoreUse {
    match cmd {
        AuditCommand::Verify { .. } => super::StoreUse::Open,
        // They add the signer's public key to the store.
        AuditCommand::Checkpoint { .. } | AuditCommand::Export(_) => super::StoreUse::Shared,
    }
}

/// Run `repro audit`.
pub fn run(ctx: &super::Ctx, cmd: AuditCommand) -> Result<u8> {
    let store = &*ctx.store()?;
    let quiet = ctx.quiet;
    let cmd = &cmd;
    match cmd {
        AuditCommand::Verify {
            json,
            expect_head,
            checkpoints,
        } => verify(store, quiet, *json, expect_head, checkpoints),
        AuditCommand::Checkpoint { key, output } => {
            checkpoint(store, quiet, key.clone(), output.as_deref())
        }
        AuditCommand::Export(args) => export(store, quiet, args),
    }
}

/// `repro audit verify`.
fn verify(
    store: &Store,
    quiet: bool,
    json: bool,
    expect_head: &[Checkpoint],
    files: &[PathBuf],
) -> Result<u8> {
    let mut against = expect_head.to_vec();
    for f in files {
        against.extend(read_checkpoints(store, f)?);
    }
    let mut v = audit::verify_against(store, &against)?;
    // Governance state is in the log: files that say otherwise are named.
    let mut governance = Vec::new();
    if v.intact {
        let state = repro_governance::chain::replay(store).map_err(super::governance::lift)?;
        let diffs =
            repro_governance::chain::differences(store, &state).map_err(super::governance::lift)?;
        if state.root.is_some() {
            governance = diffs;
        } else if !diffs.is_empty() && !quiet {
            eprintln!(
                "note: governance files not backed by the log (the store has no governance root):\n  {}",
                diffs.join("\n  ")
            );
        }
        if !governance.is_empty() {
            v.intact = false;
        }
    }
    if !governance.is_empty() {
        for d in &governance {
            println!("{d}");
        }
        eprintln!(
            "error: governance files in the store disagree with the signed audit log ({} difference{})\nhint: the log is the record: restore the files from a backup, or have the administrators redo the change",
            governance.len(),
            if governance.len() == 1 { "" } else { "s" }
        );
        if json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        return Ok(repro_evidence::exit::CANNOT);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if v.intact {
        if !quiet {
            let held = match v.checkpoints {
                0 => String::new(),
                1 => ", and it holds the entry of the checkpoint".to_string(),
                n => format!(", and it holds the entries of all {n} checkpoints"),
            };
            println!(
                "the audit log is intact: {} entries, chain, signatures and head check out{held}",
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
        let has = |k: ProblemKind| v.problems.iter().any(|p| p.kind == k);
        if has(ProblemKind::Emptied) {
            eprintln!(
                "hint: restore `v1/audit/log.jsonl` and `v1/audit/head` from a backup or an export (`repro audit export`), and check them with `--checkpoint`; records made without a signing key are not logged, so such a store has no log: `repro key generate` before the next build"
            );
        }
        if has(ProblemKind::Checkpoint) {
            eprintln!(
                "hint: the log no longer holds what a checkpoint kept outside the store names: restore it from a backup or from the exports that carried the checkpoint"
            );
        }
    }
    Ok(if v.intact {
        repro_evidence::exit::OK
    } else {
        repro_evidence::exit::CANNOT
    })
}

/// The signed checkpoints in `path`, each checked with the keys in the
/// store: the envelope `repro audit checkpoint` writes, or every checkpoint
/// line or message of an export. A checkpoint whose signature does not
/// check out is an error (exit 3) naming the file and line.
fn read_checkpoints(store: &Store, path: &Path) -> Result<Vec<Checkpoint>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the checkpoint file `{}`", path.display()))?;
    let lookup = |k: &str| keys::lookup_in_store(store, k);
    if let Ok(env) = Envelope::parse(text.as_bytes()) {
        return Ok(vec![audit::open_checkpoint(
            &env,
            &path.display().to_string(),
            lookup,
        )?]);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(env) =
            audit::parse_checkpoint_line(line).or_else(|| syslog::parse_checkpoint(line))
        {
            let source = format!("{}:{}", path.display(), i + 1);
            out.push(audit::open_checkpoint(&env, &source, lookup)?);
        }
    }
    if out.is_empty() {
        return Err(UserError(format!(
            "`{}` holds no audit checkpoint\nhint: pass the output of `repro audit checkpoint` or of `repro audit export`",
            path.display()
        ))
        .into());
    }
    Ok(out)
}

/// `repro audit checkpoint`.
fn checkpoint(
    store: &Store,
    quiet: bool,
    key: Option<PathBuf>,
    output: Option<&Path>,
) -> Result<u8> {
    let key_path = super::key_path(key)?;
    let key = keys::load(&key_path)?;
    let who = attest::identity_of(&key_path, &key);
    if let Some(out) = output {
        refuse_inside_store(store, out)?;
    }
    let env = audit::checkpoint(store, &key, &who)?;
    let cp: Checkpoint = env.unverified_payload()?;
    let mut bytes = env.to_vec_pretty()?;
    bytes.push(b'\n');
    let target = match output {
        Some(path) => {
            std::fs::write(path, &bytes)
                .with_context(|| format!("cannot write `{}`", path.display()))?;
            format!(" to `{}`", path.display())
        }
        None => {
            std::io::stdout()
                .write_all(&bytes)
                .context("cannot write to stdout")?;
            String::new()
        }
    };
    if !quiet {
        eprintln!(
            "signed the checkpoint of entry {} (sha256:{}){target}: {}\nhint: keep it outside the store; check the log against it with `repro audit verify --checkpoint <file>` or `--expect-head {}`",
            cp.seq,
            cp.sha256,
            cp.describe(),
            cp.compact()
        );
    }
    Ok(repro_evidence::exit::OK)
}

/// Refuse to write a checkpoint into the store: whoever rewrites the log
/// there can rewrite the checkpoint too.
fn refuse_inside_store(store: &Store, path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (Ok(dir), Ok(root)) = (dir.canonicalize(), store.dir().canonicalize()) else {
        return Ok(());
    };
    if dir.starts_with(&root) {
        return Err(UserError(format!(
            "`{}` is inside the store `{}`: a checkpoint kept beside the log can be rewritten with it\nhint: keep it elsewhere (another machine, a ticket, a SIEM)",
            path.display(),
            root.display()
        ))
        .into());
    }
    Ok(())
}

/// The signed checkpoint of `head` (the last entry read, as its line and
/// entry) for an export, with its opened payload; `None`, with a warning,
/// when there is no usable key or the log does not verify.
fn export_checkpoint(
    store: &Store,
    key: Option<PathBuf>,
    head: Option<&(String, audit::Entry)>,
) -> Result<Option<(Envelope, Checkpoint)>> {
    let Some((line, entry)) = head else {
        return Ok(None);
    };
    let warn = |why: &str| {
        eprintln!("warning: the export carries no signed checkpoint of the head: {why}");
    };
    let path = match key.or_else(audit::env_key) {
        Some(p) if p.exists() => p,
        Some(p) => {
            warn(&format!("there is no signing key at `{}`\nhint: pass `--key <file>`, or create one with `repro key generate`", p.display()));
            return Ok(None);
        }
        None => {
            warn("no signing key location (pass `--key` or set REPRO_KEY)");
            return Ok(None);
        }
    };
    let key = keys::load(&path)?;
    let v = audit::verify(store)?;
    if !v.intact {
        warn("the log does not verify\nhint: run `repro audit verify`");
        return Ok(None);
    }
    let who = attest::identity_of(&path, &key);
    let head = Checkpoint {
        seq: entry.seq,
        sha256: repro_store::Hash::of(line.as_bytes()).hex(),
        time: None,
        signer: None,
        source: None,
    };
    keys::publish(store, &key.verifying_key())?;
    let env = audit::sign_checkpoint(&head, &key, &who);
    let cp = env.unverified_payload()?;
    Ok(Some((env, cp)))
}

/// `repro audit export`.
fn export(store: &Store, quiet: bool, args: &ExportArgs) -> Result<u8> {
    if args.tcp.is_some() && args.format != Format::Syslog {
        return Err(
            UserError("`--tcp` sends syslog messages\nhint: add `--format syslog`".into()).into(),
        );
    }
    let all = audit::entries(store)?;
    let signed = if args.no_checkpoint {
        None
    } else {
        export_checkpoint(store, args.key.clone(), all.last())?
    };
    let entries: Vec<_> = all
        .into_iter()
        .filter(|(_, e)| e.seq > args.since)
        .collect();
    let origin = syslog::Origin::this_process();
    let mut messages: Vec<String> = entries
        .iter()
        .map(|(line, e)| match args.format {
            Format::Jsonl => line.clone(),
            Format::Syslog => syslog::format(e, args.facility, &origin),
        })
        .collect();
    if let Some((env, cp)) = &signed {
        messages.push(match args.format {
            Format::Jsonl => audit::checkpoint_line(env),
            Format::Syslog => syslog::format_checkpoint(env, cp, args.facility, &origin),
        });
    }
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
        if let Some((_, cp)) = &signed {
            eprintln!(
                "the export ends with the signed checkpoint of entry {} (`--expect-head {}`)",
                cp.seq,
                cp.compact()
            );
        }
    }
    Ok(repro_evidence::exit::OK)
}

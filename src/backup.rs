//! `kaggleingest backup DEST`: a consistent, integrity-checked copy of the
//! database, written atomically (temporary file, fsync, rename).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::db::{self, Location};

/// Backs up `src` to `dest`; prints what it did, or returns one line saying
/// why not. `dest` is never left half-written, and an existing `dest` is
/// replaced only when `overwrite` says so: swapped arguments or a typo must
/// not turn a file (a stopped server's database, say) into an old copy.
pub async fn run(db: &Location, dest: &Path, overwrite: bool) -> anyhow::Result<()> {
    let src = match db {
        Location::Sqlite(path) => path.as_path(),
        Location::Postgres(url) => bail!(
            "{url} is PostgreSQL: back it up with pg_dump (e.g. `pg_dump --format=custom --file={} 'postgres://…'`), which is consistent while nodes keep writing",
            dest.display()
        ),
    };
    if !src.exists() {
        bail!("no database at {}", src.display());
    }
    refuse_live_files(src, dest)?;
    refuse_companions_of(dest)?;
    if !overwrite && dest.symlink_metadata().is_ok() {
        bail!(
            "{} exists: pass --overwrite to replace it (atomically), or choose another destination",
            dest.display()
        );
    }
    let tmp = temporary_path(dest);
    let (src_owned, tmp_owned) = (src.to_owned(), tmp.clone());
    let copied = tokio::task::spawn_blocking(move || {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("backing up {bar:40} {pos}/{len} pages")
                    .expect("the template is a valid literal"),
            );
            bar
        });
        let report = db::backup_to(&src_owned, &tmp_owned, |done, total| {
            if let Some(bar) = &bar {
                bar.set_length(total);
                bar.set_position(done);
            }
        });
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        report
    })
    .await
    .context("the backup task failed")?;
    let report = match copied {
        Ok(report) => report,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    publish(&tmp, dest)
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("cannot write {}", dest.display()))?;
    println!(
        "backed up {} account(s), {} pages, from {} to {} (integrity_check: ok)",
        report.accounts,
        report.pages,
        src.display(),
        dest.display()
    );
    Ok(())
}

/// Refuses a destination that is the live database or one of its companion
/// files: the final rename would swap the server's file for a copy (later
/// writes would go to an unlinked inode), and overwriting the WAL destroys
/// the commits it holds. Files are compared by device and inode, so another
/// spelling, a symlink or a hard link is caught too; a companion that does
/// not exist yet is compared by its resolved path.
fn refuse_live_files(db: &Path, dest: &Path) -> anyhow::Result<()> {
    let refuse = |what: &str| {
        Err(anyhow!(
            "refusing to write the backup over {what} ({}): choose another destination",
            dest.display()
        ))
    };
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let what = if suffix.is_empty() {
            "the database itself".to_owned()
        } else {
            format!("the database's {suffix} file")
        };
        let beside_link = with_suffix(db, suffix);
        // SQLite keeps its companions beside the file a symlink points to.
        let beside_target = std::fs::canonicalize(db)
            .ok()
            .map(|target| with_suffix(&target, suffix));
        for live in std::iter::once(beside_link).chain(beside_target) {
            if same_file::is_same_file(&live, dest).unwrap_or(false)
                || resolved(&live).is_some_and(|live| resolved(dest) == Some(live))
            {
                return refuse(&what);
            }
        }
    }
    Ok(())
}

/// Refuses a destination with SQLite companion files beside it: another
/// database in use, or one left by a crash. The copy renamed into place
/// would inherit them, and SQLite would roll a stale `-journal` back into it
/// (or a reader could meet a stale `-wal`), mixing two databases.
fn refuse_companions_of(dest: &Path) -> anyhow::Result<()> {
    for suffix in ["-wal", "-shm", "-journal"] {
        let companion = with_suffix(dest, suffix);
        if companion.symlink_metadata().is_ok() {
            bail!(
                "refusing to write the backup to {}: {} exists beside it (a database in use, \
                 or left by a crash); move it away or choose another destination",
                dest.display(),
                companion.display()
            );
        }
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name (`db` + `-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The absolute path `path` names, its directory resolved (symlinks, `.`
/// and `..`), whether or not the file itself exists.
fn resolved(path: &Path) -> Option<PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Some(std::fs::canonicalize(dir).ok()?.join(path.file_name()?))
}

/// Beside the destination, so the final rename stays on one filesystem.
fn temporary_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map_or("backup".into(), |n| n.to_string_lossy().into_owned());
    dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Makes the finished copy durable, then moves it into place atomically.
fn publish(tmp: &Path, dest: &Path) -> std::io::Result<()> {
    std::fs::File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, dest)?;
    // The rename itself is durable once the directory is synced.
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

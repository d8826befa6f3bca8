//! Durable file operations: fault-aware write and fsync, directory fsync,
//! and atomic whole-file replacement.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::Faults;

/// Writes all of `buf` to `file`, consulting `faults` first. `what` names
/// the file in injected error messages.
///
/// Uses `write_all`, never a bare `Write::write` (which may write less).
pub fn write_all(faults: &Faults, file: &mut File, buf: &[u8], what: &str) -> io::Result<()> {
    faults.check_write(what)?;
    let tear = faults.take_tear();
    if tear > 0 {
        file.write_all(&buf[..tear.min(buf.len())])?;
        faults.count_write_failure();
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("injected fault: write of {what} torn after {tear} bytes"),
        ));
    }
    file.write_all(buf)
}

/// `fdatasync`s `file`, consulting `faults` first.
pub fn sync_file(faults: &Faults, file: &File, what: &str) -> io::Result<()> {
    faults.check_fsync(what)?;
    file.sync_data()
}

/// Fsyncs a directory, making creations, renames and removals of its
/// entries durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` so that after a crash the file holds either
/// its old content or all of the new: write a temporary file next to it,
/// fsync it, rename it over `path`, fsync the directory.
pub fn atomic_write(path: &Path, bytes: &[u8], faults: &Faults) -> io::Result<()> {
    atomic_write_defer_dir_sync(path, bytes, faults)?;
    fsync_dir(parent_dir(path))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// [`atomic_write`] without its last step: the rename is not yet durable
/// until the caller fsyncs the directory ([`fsync_dir`] of `path`'s
/// parent). For writing many files of a few directories with one
/// directory fsync each: after a crash before that fsync, each file holds
/// its old content (or is absent) or all of the new.
pub fn atomic_write_defer_dir_sync(path: &Path, bytes: &[u8], faults: &Faults) -> io::Result<()> {
    let dir = parent_dir(path);
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("atomic_write: {} has no file name", path.display()),
        ));
    };
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let what = path.display().to_string();
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        write_all(faults, &mut f, bytes, &what)?;
        faults.check_fsync(&what)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: never leave a stray temporary file behind.
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        atomic_write(&p, b"one", &Faults::disabled()).unwrap();
        atomic_write(&p, b"two", &Faults::disabled()).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_atomic_write_keeps_old_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        atomic_write(&p, b"old", &Faults::disabled()).unwrap();
        let faults = Faults::enabled();
        faults.fail_next_fsync();
        let e = atomic_write(&p, b"new", &faults).unwrap_err();
        assert!(e.to_string().contains("injected fault"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn torn_write_writes_a_prefix_then_fails() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let mut f = File::create(&p).unwrap();
        let faults = Faults::enabled();
        faults.tear_next_write(3);
        assert!(write_all(&faults, &mut f, b"abcdef", "f").is_err());
        write_all(&faults, &mut f, b"XY", "f").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"abcXY");
    }
}

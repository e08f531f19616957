//! The private key's file: the one place auth touches the disk. `lvn genkey`
//! writes a new key with [`write_new_key`]; `lvn run` and `lvn pubkey` read
//! one with [`load_private_key`]. The file holds the key in base64 and a
//! newline, mode 0600, and is refused if group or others may touch it.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process,
};

use zeroize::Zeroizing;

use super::auth::{KeyError, PrivateKey, PublicKey};

/// Mode of a new key file: read and write for the owner only.
const KEY_FILE_MODE: u32 = 0o600;

/// Permission bits for group and others: any of them makes a key file unsafe.
const GROUP_OTHER_BITS: u32 = 0o077;

/// Errors keep the cause in the message and not as `source()`, so that
/// `{:#}` in the CLI prints it once.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{} already exists; refusing to overwrite a private key", path.display())]
    Exists { path: PathBuf },
    #[error("writing private key {}: {op}: {error}", path.display())]
    Write {
        path: PathBuf,
        op: &'static str,
        error: io::Error,
    },
    #[error("reading private key {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error(
        "{} is readable by group or others (mode {mode:04o}); run chmod 600 {}",
        path.display(),
        path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("private key {}: {error}", path.display())]
    Invalid { path: PathBuf, error: KeyError },
}

/// Writes a new private key to `path` and returns its public key. The key
/// goes to a 0600 temporary file in the same directory, is synced, then
/// linked to `path`: a crash leaves either no key file or a whole one, and
/// linking (unlike rename) fails if `path` exists, even if it appeared
/// after we started, so no key is ever overwritten.
pub fn write_new_key(path: &Path) -> Result<PublicKey, KeyFileError> {
    let key = PrivateKey::generate();
    let text = Zeroizing::new(format!("{}\n", key.to_base64()));
    let tmp = temp_path(path);
    let result = write_synced(&tmp, text.as_bytes())
        .map_err(|error| write_error(path, "writing temporary file", error))
        .and_then(|()| publish(&tmp, path));
    // The temporary name is ours alone; after a link it is a second name
    // for the key, after a failure a leftover.
    let _ = fs::remove_file(&tmp);
    result?;
    sync_dir(path).map_err(|error| write_error(path, "syncing its directory", error))?;
    Ok(key.public())
}

/// Reads the private key at `path`. Refuses a file that group or others
/// may read or write: a key others can read is no longer private.
pub fn load_private_key(path: &Path) -> Result<PrivateKey, KeyFileError> {
    let read_error = |error| KeyFileError::Read {
        path: path.to_path_buf(),
        error,
    };
    let mut file = File::open(path).map_err(read_error)?;
    let mode = file.metadata().map_err(read_error)?.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER_BITS != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text).map_err(read_error)?;
    PrivateKey::from_base64(text.trim()).map_err(|error| KeyFileError::Invalid {
        path: path.to_path_buf(),
        error,
    })
}

/// `.<name>.<pid>.tmp` beside `path`: same directory, so linking it is
/// atomic; the pid keeps two concurrent `lvn genkey` apart.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.{}.tmp", process::id()))
}

fn write_synced(tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(KEY_FILE_MODE)
        .open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn publish(tmp: &Path, path: &Path) -> Result<(), KeyFileError> {
    fs::hard_link(tmp, path).map_err(|error| match error.kind() {
        io::ErrorKind::AlreadyExists => KeyFileError::Exists {
            path: path.to_path_buf(),
        },
        _ => write_error(path, "linking the temporary file", error),
    })
}

/// Makes the new name itself durable, not only the file's contents.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn write_error(path: &Path, op: &'static str, error: io::Error) -> KeyFileError {
    KeyFileError::Write {
        path: path.to_path_buf(),
        op,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn written_key_loads_back_with_the_same_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.key");
        let public = write_new_key(&path).unwrap();

        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 45, "44 base64 characters and a newline");
        assert!(text.ends_with('\n'));
        assert_eq!(load_private_key(&path).unwrap().public(), public);

        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn two_keys_differ() {
        let dir = tempfile::tempdir().unwrap();
        let one = write_new_key(&dir.path().join("one.key")).unwrap();
        let two = write_new_key(&dir.path().join("two.key")).unwrap();
        assert_ne!(one, two);
    }

    #[test]
    fn existing_file_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.key");
        let first = write_new_key(&path).unwrap();
        let before = fs::read(&path).unwrap();

        let err = write_new_key(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "{} already exists; refusing to overwrite a private key",
                path.display()
            )
        );
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(load_private_key(&path).unwrap().public(), first);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.key");
        write_new_key(&path).unwrap();
        set_mode(&path, 0o644);

        let err = load_private_key(&path).unwrap_err();
        let shown = path.display();
        assert_eq!(
            err.to_string(),
            format!("{shown} is readable by group or others (mode 0644); run chmod 600 {shown}")
        );
        for mode in [0o640, 0o604, 0o620, 0o602, 0o610, 0o601] {
            set_mode(&path, mode);
            assert!(
                matches!(load_private_key(&path), Err(KeyFileError::TooOpen { .. })),
                "mode {mode:o}"
            );
        }
        set_mode(&path, 0o400);
        assert!(load_private_key(&path).is_ok(), "owner-only read is fine");
    }

    #[test]
    fn whitespace_around_the_key_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.key");
        let key = PrivateKey::generate();
        fs::write(&path, format!("  {}\r\n\n", key.to_base64())).unwrap();
        set_mode(&path, 0o600);
        assert_eq!(load_private_key(&path).unwrap().public(), key.public());
    }

    #[test]
    fn garbage_says_which_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.key");
        let shown = path.display();

        fs::write(&path, "this is not a key\n").unwrap();
        set_mode(&path, 0o600);
        assert_eq!(
            load_private_key(&path).unwrap_err().to_string(),
            format!("private key {shown}: not base64 (invalid character at offset 4)")
        );

        fs::write(&path, "AAAAAAAAAAAAAAAAAAAAAA==\n").unwrap();
        assert_eq!(
            load_private_key(&path).unwrap_err().to_string(),
            format!("private key {shown}: decodes to 16 bytes, expected 32")
        );

        fs::write(&path, "").unwrap();
        assert_eq!(
            load_private_key(&path).unwrap_err().to_string(),
            format!("private key {shown}: decodes to 0 bytes, expected 32")
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.key");
        let err = load_private_key(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Read { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("reading private key {}: ", path.display())),
            "{err}"
        );
    }

    #[test]
    fn missing_directory_is_a_write_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("private.key");
        let err = write_new_key(&path).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "writing private key {}: writing temporary file: ",
                path.display()
            )),
            "{err}"
        );
    }
}

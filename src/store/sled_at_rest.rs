//! Encryption at rest of a [`SledStore`] (`database.key`): the key check, made before sled opens
//! anything, and the migration of a plain store to a sealed one.
//!
//! **Layout.** A sealed database directory holds, beside sled's own files, [`KEY_CHECK_FILE`]: a
//! known plaintext sealed with the key (sled removes no file of its directory but its own
//! `snap.*`). Its `meta` tree also holds [`keys::AT_REST_KEY`], so a sealed database whose
//! key-check file was lost is refused rather than taken for a plain one.
//!
//! **Opening** ([`SledStore::open_with_key`]):
//! 1. a migration interrupted between its two renames (the directory itself missing) is
//!    finished or rolled back (see below);
//! 2. with a key-check file: without a key, [`Error::KeyRequired`]; a key that does not open
//!    it, [`Error::WrongKey`]. Both are decided by reading that one file, before sled opens
//!    the database, so a refused start writes nothing. With the right key, what an earlier
//!    migration left behind is removed;
//! 3. without one and with a key: a new database gets its key-check file before sled creates
//!    it; an existing (plain) one is migrated, at once, before the bridge uses it;
//! 4. sled opens the database, and its `meta` flag must agree with the key.
//!
//! **Migration** (logged as "encrypting the database at rest"). sled keeps old versions of
//! values in its segment files, so sealing in place would leave the plaintext on disk. Instead:
//! 1. remove a stale `<db>.sealing` (an earlier attempt's);
//! 2. open the plain store (schema checked), copy every tree into a fresh database in
//!    `<db>.sealing`, sealing [`keys::SEALED_TREES`] (pending events are renumbered in order
//!    from the new database's id generator, which starts at 0), flag it in `meta`, flush, close;
//! 3. write the key-check file into `<db>.sealing`, last: from then on the copy is complete;
//! 4. rename `<db>` to `<db>.plain-old`, then `<db>.sealing` to `<db>` (each rename made durable
//!    by an fsync of the parent directory), and delete `<db>.plain-old`.
//!
//! A crash before the first rename leaves the plain `<db>` as it was (step 1 cleans up next
//! time). Between the renames `<db>` is missing: the next start renames `<db>.sealing` into
//! place if it holds the key-check file, or else `<db>.plain-old` back. After the second rename
//! `<db>` is the sealed store, and the next start with the key deletes `<db>.plain-old`. So
//! either the old plain store or the new sealed one is used, never a mix. Deleting a file does
//! not scrub the disk blocks it used (docs/threat-model.md).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ::sled::Db;
use tracing::{info, warn};

use super::keys::{self, Part};
use super::seal::{DatabaseKey, KEY_CHECK, Seal};
use super::sled::{SledStore, open_db};
use super::{Error, Result, Store as _};

/// The key-check file, inside the database directory.
pub const KEY_CHECK_FILE: &str = "interop-bridge.key-check";
/// What the key-check file holds, sealed.
const KEY_CHECK_PLAINTEXT: &[u8] = b"interop-bridge database.key check v1";
/// The sibling directory a migration builds the sealed copy in.
const SEALING_SUFFIX: &str = ".sealing";
/// The sibling name of the plain store between a migration's two renames.
const PLAIN_OLD_SUFFIX: &str = ".plain-old";
/// sled's default tree, which the bridge never writes.
const DEFAULT_TREE: &[u8] = b"__sled__default";

/// Whether a database directory is encrypted at rest, as `check-config` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtRest {
    /// No database yet: it will be created sealed if a key is set.
    Missing,
    /// A plain database: migrated at the next start if a key is set.
    Plain,
    /// A sealed database, and the key given opens it.
    Sealed,
}

/// The state of the database at `path`, reading only the key-check file: a sealed database
/// without `key` is [`Error::KeyRequired`], with a key that does not open it [`Error::WrongKey`].
pub fn at_rest_state(path: &Path, key: Option<&DatabaseKey>) -> Result<AtRest> {
    if exists(&path.join(KEY_CHECK_FILE))? {
        verify_key(path, key.ok_or(Error::KeyRequired)?)?;
        return Ok(AtRest::Sealed);
    }
    Ok(if is_new(path)? {
        AtRest::Missing
    } else {
        AtRest::Plain
    })
}

impl SledStore {
    /// Opens (creating if needed) the database in directory `path`, encrypted at rest with
    /// `key` (see the module docs): a new database is created sealed, a plain one is migrated,
    /// a sealed one must be opened with its key. `None`: a plain database; a sealed one is
    /// refused.
    pub fn open_with_key(path: &Path, key: Option<&DatabaseKey>) -> Result<Self> {
        recover_interrupted(path)?;
        let has_check = exists(&path.join(KEY_CHECK_FILE))?;
        let seal = match key {
            None if has_check => return Err(Error::KeyRequired),
            None => Seal::default(),
            Some(key) => {
                if has_check {
                    verify_key(path, key)?;
                    remove_leftovers(path);
                } else if is_new(path)? {
                    fs::create_dir_all(path).map_err(io("creating the database directory"))?;
                    write_key_check(path, key)?;
                } else {
                    migrate(path, key)?;
                }
                Seal::with_key(key)
            }
        };
        let store = Self::open_sealed_as(path, seal)?;
        check_flag(&store)?;
        Ok(store)
    }
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::Backend(format!("{what}: {e}"))
}

fn exists(path: &Path) -> Result<bool> {
    path.try_exists()
        .map_err(io("looking for the database files"))
}

/// `<db><suffix>`, beside the database directory.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or(path.as_os_str()).to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes the entries of directory `dir` (creations, renames, removals) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing a directory"))
}

/// No database yet: the directory is missing or empty.
fn is_new(path: &Path) -> Result<bool> {
    if !exists(path)? {
        return Ok(true);
    }
    let mut entries = fs::read_dir(path).map_err(io("listing the database directory"))?;
    Ok(entries.next().is_none())
}

/// Checks `key` against the key-check file of `path`; reads nothing else, writes nothing.
fn verify_key(path: &Path, key: &DatabaseKey) -> Result<()> {
    let stored = fs::read(path.join(KEY_CHECK_FILE)).map_err(io("reading the key-check file"))?;
    match Seal::with_key(key).open(KEY_CHECK, b"", &stored) {
        Ok(plain) if &*plain == KEY_CHECK_PLAINTEXT => Ok(()),
        _ => Err(Error::WrongKey),
    }
}

/// Writes the key-check file of `dir` durably (a temporary file renamed into place).
fn write_key_check(dir: &Path, key: &DatabaseKey) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let sealed = Seal::with_key(key).seal(KEY_CHECK, b"", KEY_CHECK_PLAINTEXT.to_vec())?;
    let tmp = dir.join(format!("{KEY_CHECK_FILE}.tmp"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("creating the key-check file"))?;
    file.write_all(&sealed)
        .and_then(|()| file.sync_all())
        .map_err(io("writing the key-check file"))?;
    fs::rename(&tmp, dir.join(KEY_CHECK_FILE)).map_err(io("renaming the key-check file"))?;
    sync_dir(dir)
}

/// Checks `meta`'s at-rest flag against the store's seal; flags a new sealed database.
fn check_flag(store: &SledStore) -> Result<()> {
    let meta = store.db().open_tree(keys::META)?;
    let key = keys::str_key(keys::AT_REST_KEY);
    let flagged = match meta.get(&key)? {
        None => false,
        Some(v) if v == keys::AT_REST_SEALED => true,
        Some(_) => {
            return Err(Error::Corrupt {
                tree: keys::META,
                reason: "unknown at-rest flag".to_owned(),
            });
        }
    };
    match (store.seal.is_sealed(), flagged) {
        (false, true) => Err(Error::Corrupt {
            tree: keys::META,
            reason: format!(
                "the database is encrypted at rest but its key-check file {KEY_CHECK_FILE} is \
                 missing: restore it from a backup (and set database.key)"
            ),
        }),
        (true, false) if store.data_trees_empty() => {
            meta.insert(key, keys::AT_REST_SEALED)?;
            store.flush()
        }
        (true, false) => Err(Error::Corrupt {
            tree: keys::META,
            reason: format!(
                "the database has a key-check file ({KEY_CHECK_FILE}) but was not encrypted \
                 at rest by the bridge"
            ),
        }),
        _ => Ok(()),
    }
}

/// Finishes or rolls back a migration that stopped between its two renames (`<db>` missing).
fn recover_interrupted(path: &Path) -> Result<()> {
    let (sealing, plain_old) = (
        sibling(path, SEALING_SUFFIX),
        sibling(path, PLAIN_OLD_SUFFIX),
    );
    if exists(path)? || !exists(&plain_old)? {
        return Ok(());
    }
    if exists(&sealing.join(KEY_CHECK_FILE))? {
        warn!("finishing an interrupted encryption of the database at rest");
        fs::rename(&sealing, path).map_err(io("renaming the sealed copy into place"))?;
    } else {
        warn!("rolling back an interrupted encryption of the database at rest");
        fs::rename(&plain_old, path).map_err(io("renaming the plain database back"))?;
    }
    sync_dir(parent(path))
}

/// Removes what an earlier migration left beside a sealed `<db>`: the plain copy (its
/// plaintext) and a stale sealed copy. A failure is logged; the next start tries again.
fn remove_leftovers(path: &Path) {
    for suffix in [PLAIN_OLD_SUFFIX, SEALING_SUFFIX] {
        let leftover = sibling(path, suffix);
        if leftover.exists()
            && let Err(e) = remove_dir(&leftover)
        {
            warn!(path = %leftover.display(), error = %e, "cannot remove a copy of the database; remove it by hand");
        }
    }
}

/// Removes a directory tree, retrying for a moment: sled's background threads of a database
/// just closed may still be writing into it.
fn remove_dir(dir: &Path) -> Result<()> {
    let mut attempts = 0;
    loop {
        match fs::remove_dir_all(dir) {
            Ok(()) => return sync_dir(parent(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) if attempts < 20 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(io("removing a copy of the database")(e)),
        }
    }
}

/// Encrypts the plain database at `path` at rest (see the module docs for the steps).
fn migrate(path: &Path, key: &DatabaseKey) -> Result<()> {
    info!(path = %path.display(), "encrypting the database at rest");
    let copied = build_sealed_copy(path, key)?;
    swap_in_sealed_copy(path)?;
    info!(values = copied, "the database is encrypted at rest");
    Ok(())
}

/// Steps 1 to 3: the complete sealed copy in `<db>.sealing`. Returns how many values it copied.
pub(super) fn build_sealed_copy(path: &Path, key: &DatabaseKey) -> Result<usize> {
    let sealing = sibling(path, SEALING_SUFFIX);
    remove_dir(&sealing)?;
    let copied = {
        let old = SledStore::open_sealed_as(path, Seal::default())?;
        check_flag(&old)?;
        let new = open_db(&sealing)?;
        let copied = copy_sealing(old.db(), &new, &Seal::with_key(key))?;
        new.flush()?;
        copied
    };
    write_key_check(&sealing, key)?;
    Ok(copied)
}

/// Step 4: the two renames, then the plain copy deleted.
pub(super) fn swap_in_sealed_copy(path: &Path) -> Result<()> {
    let (sealing, plain_old) = (
        sibling(path, SEALING_SUFFIX),
        sibling(path, PLAIN_OLD_SUFFIX),
    );
    fs::rename(path, &plain_old).map_err(io("moving the plain database aside"))?;
    sync_dir(parent(path))?;
    fs::rename(&sealing, path).map_err(io("renaming the sealed copy into place"))?;
    sync_dir(parent(path))?;
    remove_dir(&plain_old)
}

/// Copies every catalogued tree of `from` into the empty `to`, sealing the values of the
/// sealed trees, and flags `to` as sealed. Pending events get new positions from `to`, in
/// their order (`to`'s id generator starts again at 0). Returns how many values it copied.
fn copy_sealing(from: &Db, to: &Db, seal: &Seal) -> Result<usize> {
    let unknown = from.tree_names().into_iter().any(|name| {
        name != DEFAULT_TREE && !keys::ALL_TREES.iter().any(|t| t.as_bytes() == &name[..])
    });
    if unknown || !from.is_empty() {
        return Err(Error::Corrupt {
            tree: keys::META,
            reason: "the database holds a tree the catalogue does not name".to_owned(),
        });
    }
    let mut copied = 0;
    for &name in keys::ALL_TREES {
        let (source, target) = (from.open_tree(name)?, to.open_tree(name)?);
        let sealed = keys::SEALED_TREES.contains(&name);
        for entry in source.iter() {
            let (key, value) = entry?;
            let key = if name == keys::POSITION_PENDINGEVENT {
                keys::encode(&[Part::U64(to.generate_id()?)])
            } else {
                key.to_vec()
            };
            let value = if sealed {
                seal.seal(name, &key, value.to_vec())?
            } else {
                value.to_vec()
            };
            target.insert(key, value)?;
            copied += 1;
        }
    }
    to.open_tree(keys::META)?
        .insert(keys::str_key(keys::AT_REST_KEY), keys::AT_REST_SEALED)?;
    Ok(copied)
}

#[cfg(test)]
mod tests;

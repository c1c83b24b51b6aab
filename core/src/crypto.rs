//! Client-side encryption of a backup's data file with age (<https://age-encryption.org>), once for
//! every kind of backup. An encrypted data file is a standard age file: `age -d -i KEY FILE` opens
//! it. Writing needs only public keys (recipients), so a machine that writes backups cannot read
//! them; reading needs a private key (an identity) or the passphrase.
//!
//! The metadata document says that the file is encrypted and to which recipients (public keys are
//! not secrets), so `list` and `describe` work without keys and a wrong key gets a precise error.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::SecretString;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The `algorithm` of an age-encrypted data file.
pub const ALGORITHM: &str = "age";

/// Encryption of a data file : the algorithm (`age`) and who can read it. Public
/// keys are not secrets; they are kept so that a missing or wrong key gets a precise error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    pub algorithm: String,
    /// The recipients' public keys (`age1...`, `ssh-ed25519 ...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Encrypted with a passphrase (scrypt).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passphrase: bool,
}

/// Who can read what a run writes.
#[derive(Clone)]
pub enum Seal {
    /// Public keys: `age1...` (X25519), `ssh-ed25519 ...` or `ssh-rsa ...`.
    Recipients(Vec<String>),
    /// A passphrase (scrypt).
    Passphrase(SecretString),
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seal::Recipients(r) => f.debug_tuple("Recipients").field(r).finish(),
            Seal::Passphrase(_) => f.write_str("Passphrase(..)"),
        }
    }
}

impl Seal {
    /// Recipients as `--encrypt-to` gives them: every one must parse.
    pub fn recipients(list: &[String]) -> Result<Seal> {
        let list: Vec<String> = list.iter().map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect();
        if list.is_empty() {
            return Err(Error::invalid(
                "--encrypt-to",
                "",
                "name at least one recipient (age1... or an SSH public key)",
            ));
        }
        for r in &list {
            parse_recipient(r)?;
        }
        Ok(Seal::Recipients(list))
    }

    /// The passphrase in `file` (its first line).
    pub fn passphrase_file(file: &Path) -> Result<Seal> {
        Ok(Seal::Passphrase(read_passphrase(file, "--encrypt-passphrase-file")?))
    }

    /// What the metadata records of this seal.
    pub fn describe(&self) -> Encryption {
        match self {
            Seal::Recipients(r) => Encryption { algorithm: ALGORITHM.into(), recipients: r.clone(), passphrase: false },
            Seal::Passphrase(_) => Encryption { algorithm: ALGORITHM.into(), recipients: Vec::new(), passphrase: true },
        }
    }
}

/// What can open encrypted data files: identity files (`--identity`, `$KUBECTL_BACKUP_IDENTITY`,
/// a Secret) and passphrases.
#[derive(Clone, Default)]
pub struct Unseal {
    /// Where each identity came from (for messages), and its text.
    identities: Vec<(String, String)>,
    passphrases: Vec<SecretString>,
}

impl std::fmt::Debug for Unseal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let from: Vec<&str> = self.identities.iter().map(|(s, _)| s.as_str()).collect();
        f.debug_struct("Unseal").field("identities", &from).field("passphrases", &self.passphrases.len()).finish()
    }
}

impl Unseal {
    /// Reads identity files (age's format: `AGE-SECRET-KEY-1...` lines, or an SSH private key).
    pub fn identity_files(files: &[PathBuf]) -> Result<Unseal> {
        let mut u = Unseal::default();
        for f in files {
            let text = std::fs::read_to_string(f).map_err(|e| Error::Io { path: f.clone(), source: e })?;
            u.add_identity(&f.display().to_string(), text)?;
        }
        Ok(u)
    }

    /// Adds identities given as text (e.g. a Secret's key); `from` names them in messages.
    pub fn add_identity(&mut self, from: &str, text: String) -> Result<()> {
        age::IdentityFile::from_buffer(text.as_bytes())
            .ok()
            .and_then(|f| f.into_identities().ok())
            .filter(|ids| !ids.is_empty())
            .or_else(|| parse_ssh_identity(&text).map(|i| vec![i]))
            .ok_or_else(|| {
                Error::invalid("identity", from, "holds no age identity (AGE-SECRET-KEY-1...) or SSH private key")
            })?;
        self.identities.push((from.to_string(), text));
        Ok(())
    }

    /// Adds the passphrase in `file` (its first line).
    pub fn add_passphrase_file(&mut self, file: &Path) -> Result<()> {
        self.passphrases.push(read_passphrase(file, "--passphrase-file")?);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty() && self.passphrases.is_empty()
    }

    /// These keys and `other`'s.
    pub fn merge(mut self, other: Unseal) -> Unseal {
        self.identities.extend(other.identities);
        self.passphrases.extend(other.passphrases);
        self
    }

    fn describe(&self) -> String {
        let mut from: Vec<String> = self.identities.iter().map(|(s, _)| s.clone()).collect();
        if !self.passphrases.is_empty() {
            from.push("a passphrase".into());
        }
        from.join(", ")
    }

    fn identities(&self) -> Vec<Box<dyn age::Identity>> {
        let mut out: Vec<Box<dyn age::Identity>> = Vec::new();
        for (_, text) in &self.identities {
            match age::IdentityFile::from_buffer(text.as_bytes()).ok().and_then(|f| f.into_identities().ok()) {
                Some(ids) if !ids.is_empty() => out.extend(ids),
                _ => out.extend(parse_ssh_identity(text)),
            }
        }
        for p in &self.passphrases {
            out.push(Box::new(age::scrypt::Identity::new(p.clone())));
        }
        out
    }
}

fn parse_ssh_identity(text: &str) -> Option<Box<dyn age::Identity>> {
    match age::ssh::Identity::from_buffer(text.as_bytes(), None).ok()? {
        age::ssh::Identity::Unencrypted(i) => Some(Box::new(age::ssh::Identity::Unencrypted(i))),
        _ => None,
    }
}

fn read_passphrase(file: &Path, flag: &'static str) -> Result<SecretString> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::Io { path: file.to_path_buf(), source: e })?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(Error::invalid(flag, file.display().to_string(), "the file's first line is empty"));
    }
    Ok(SecretString::from(line))
}

fn parse_recipient(r: &str) -> Result<Box<dyn age::Recipient + Send>> {
    if let Ok(x) = age::x25519::Recipient::from_str(r) {
        return Ok(Box::new(x));
    }
    if let Ok(s) = age::ssh::Recipient::from_str(r) {
        return Ok(Box::new(s));
    }
    Err(Error::invalid(
        "--encrypt-to",
        r,
        "not an age recipient (age1...) or an SSH public key (ssh-ed25519 / ssh-rsa)",
    ))
}

/// A data file's bytes on their way to the store: as they are, or encrypted.
pub struct Sealed<W: Write> {
    inner: Inner<W>,
    written: u64,
}

enum Inner<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Sealed<W> {
    pub fn new(out: W, seal: Option<&Seal>) -> Result<Sealed<W>> {
        let encryptor = match seal {
            None => return Ok(Sealed { inner: Inner::Plain(out), written: 0 }),
            Some(Seal::Passphrase(p)) => age::Encryptor::with_user_passphrase(p.clone()),
            Some(Seal::Recipients(list)) => {
                let parsed = list.iter().map(|r| parse_recipient(r)).collect::<Result<Vec<_>>>()?;
                age::Encryptor::with_recipients(parsed.iter().map(|r| r.as_ref() as &dyn age::Recipient))
                    .map_err(|e| Error::Other(format!("encrypting: {e}")))?
            }
        };
        let stream = encryptor.wrap_output(out).map_err(|e| Error::Other(format!("encrypting: {e}")))?;
        Ok(Sealed { inner: Inner::Age(stream), written: 0 })
    }

    /// Bytes written in so far (before encryption, which adds 16 bytes per 64 KiB).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes the last encrypted chunk (without it the file is truncated) and returns the output.
    pub fn finish(self) -> io::Result<W> {
        match self.inner {
            Inner::Plain(w) => Ok(w),
            Inner::Age(s) => s.finish(),
        }
    }
}

impl<W: Write> Write for Sealed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.inner {
            Inner::Plain(w) => w.write(buf)?,
            Inner::Age(s) => s.write(buf)?,
        };
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(w) => w.flush(),
            Inner::Age(s) => s.flush(),
        }
    }
}

/// Opens one backup's data file, as often as a reader needs: its encryption and the keys to open it.
#[derive(Clone, Debug)]
pub struct Opener {
    encryption: Option<Encryption>,
    keys: Unseal,
    name: String,
}

impl Opener {
    pub fn new(encryption: Option<Encryption>, keys: Unseal, name: &str) -> Opener {
        Opener { encryption, keys, name: name.to_string() }
    }

    /// The backup it opens, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plaintext of `input` (see [`open`]).
    pub fn open<'r, R: Read + Send + 'r>(&self, input: R) -> Result<Box<dyn Read + Send + 'r>> {
        open(input, self.encryption.as_ref(), &self.keys, &self.name)
    }
}

/// The plaintext of a stored data file: `input` itself when `encryption` is `None`, else decrypted
/// with `keys`. Each age chunk is authenticated as it is read, so a changed or cut ciphertext is
/// an error, never altered plaintext. `name` names the backup in errors.
pub fn open<'r, R: Read + Send + 'r>(
    input: R,
    encryption: Option<&Encryption>,
    keys: &Unseal,
    name: &str,
) -> Result<Box<dyn Read + Send + 'r>> {
    let Some(enc) = encryption else {
        return Ok(Box::new(input));
    };
    let to = encrypted_to(enc);
    if enc.algorithm != ALGORITHM {
        return Err(Error::Encrypted {
            name: name.into(),
            reason: format!("it is encrypted with {:?}, which this version cannot decrypt", enc.algorithm),
        });
    }
    if keys.is_empty() {
        return Err(Error::Encrypted {
            name: name.into(),
            reason: format!(
                "it is encrypted to {to}: pass --identity FILE (or set KUBECTL_BACKUP_IDENTITY){}",
                if enc.passphrase { " or --passphrase-file FILE" } else { "" }
            ),
        });
    }
    let decryptor = age::Decryptor::new(input)
        .map_err(|e| Error::Encrypted { name: name.into(), reason: format!("not a readable age file: {e}") })?;
    let identities = keys.identities();
    match decryptor.decrypt(identities.iter().map(|i| i.as_ref())) {
        Ok(reader) => Ok(Box::new(reader)),
        Err(age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed) => Err(Error::Encrypted {
            name: name.into(),
            reason: format!("it is encrypted to {to}, and none of the keys given ({}) opens it", keys.describe()),
        }),
        Err(e) => Err(Error::Encrypted { name: name.into(), reason: format!("decrypting: {e}") }),
    }
}

fn encrypted_to(e: &Encryption) -> String {
    let mut to: Vec<String> = e.recipients.clone();
    if e.passphrase {
        to.push("a passphrase".into());
    }
    if to.is_empty() { "unnamed recipients".into() } else { to.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn key() -> (String, String) {
        let id = age::x25519::Identity::generate();
        (id.to_public().to_string(), id.to_string().expose_secret().to_string())
    }

    fn seal(bytes: &[u8], seal: &Seal) -> Vec<u8> {
        let mut w = Sealed::new(Vec::new(), Some(seal)).unwrap();
        w.write_all(bytes).unwrap();
        w.finish().unwrap()
    }

    fn unseal(cipher: &[u8], enc: &Encryption, keys: &Unseal) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        open(cipher, Some(enc), keys, "b")?.read_to_end(&mut out).map_err(|e| Error::Other(e.to_string()))?;
        Ok(out)
    }

    #[test]
    fn recipients_round_trip_and_name_themselves() {
        let (public, secret) = key();
        let s = Seal::recipients(std::slice::from_ref(&public)).unwrap();
        let plain = b"apiVersion: v1\nkind: Secret\n".repeat(10_000);
        let cipher = seal(&plain, &s);
        assert!(cipher.starts_with(b"age-encryption.org/v1"));
        let enc = s.describe();
        assert_eq!(enc.recipients, vec![public.clone()]);
        let mut keys = Unseal::default();
        keys.add_identity("mine.key", secret).unwrap();
        assert_eq!(unseal(&cipher, &enc, &keys).unwrap(), plain);

        let (_, other) = key();
        let mut wrong = Unseal::default();
        wrong.add_identity("other.key", other).unwrap();
        let err = unseal(&cipher, &enc, &wrong).unwrap_err().to_string();
        assert!(err.contains(&public) && err.contains("other.key") && err.contains("none of the keys"), "{err}");
        let err = unseal(&cipher, &enc, &Unseal::default()).unwrap_err().to_string();
        assert!(err.contains("--identity") && err.contains(&public), "{err}");
    }

    #[test]
    fn a_changed_or_cut_ciphertext_never_yields_plaintext() {
        let (public, secret) = key();
        let s = Seal::recipients(&[public]).unwrap();
        let plain = vec![7u8; 200_000];
        let cipher = seal(&plain, &s);
        let mut keys = Unseal::default();
        keys.add_identity("k", secret).unwrap();
        let mut flipped = cipher.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 1;
        assert!(unseal(&flipped, &s.describe(), &keys).is_err());
        assert!(unseal(&cipher[..cipher.len() - 100], &s.describe(), &keys).is_err());
    }

    #[test]
    fn bad_recipients_and_identities_are_named() {
        let err = Seal::recipients(&["age1nope".into()]).unwrap_err().to_string();
        assert!(err.contains("--encrypt-to") && err.contains("age1nope"), "{err}");
        let err = Unseal::default().add_identity("notes.txt", "hello".into()).unwrap_err().to_string();
        assert!(err.contains("notes.txt") && err.contains("no age identity"), "{err}");
    }
}

//! Fuzzing of the file readers: the IDX reader (raw and gzip), the CIFAR-10 binary reader
//! and the safetensors checkpoint loader get random byte strings and mutations of a valid
//! file (truncations, bit flips, overwritten bytes, header fields set to zero or huge
//! values, garbage appended). Every case must end in `Ok` or in a `Data`/`Io` error naming
//! the file (and, for `Data`, an offset inside it) — never a panic — and no reader may
//! make an allocation far larger than its input (a header claiming 2^32 images is refused
//! from the file length, not by running out of memory).
//!
//! Deterministic (splitmix64, one seed per case, printed on failure). `WGTRAIN_FUZZ_ITERS`
//! sets the random cases per reader (default 2,000) so CI can run longer.

mod common;
use common::gpu;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use wgtrain_graph::Session;
use wgtrain_models::checkpoint::{self, Position};
use wgtrain_models::data::cifar::Cifar10;
use wgtrain_models::data::idx::{Mnist, parse_idx_u8, read_maybe_gz, vendored_dir};
use wgtrain_models::{ModelError, zoo};

/// Records the largest single allocation of the current thread, so a test can check that
/// a reader did not trust a size field before comparing it with the file length.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the tracking only
// touches a const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// splitmix64: tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The largest single allocation a reader may make for these small inputs (wgpu's own
/// staging for a successful checkpoint load takes some 64 KiB); a trusted size field
/// would ask for gigabytes.
const SMALL: usize = 1 << 20;

fn iterations() -> usize {
    std::env::var("WGTRAIN_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000)
}

/// A header field of a valid file: byte offset, width and endianness.
#[derive(Clone, Copy)]
struct Field {
    offset: usize,
    width: usize,
    big_endian: bool,
}

/// One random case: either random bytes of a random length, or a mutation of `valid`.
/// Returns the bytes and a description for the failure message.
fn mutate(rng: &mut Rng, valid: &[u8], fields: &[Field]) -> (Vec<u8>, String) {
    let mut b = valid.to_vec();
    let kind = rng.below(7);
    let what = match kind {
        0 => {
            let n = rng.below(4096);
            return (rng.bytes(n), format!("{n} random bytes"));
        }
        1 => {
            let at = rng.below(b.len() + 1);
            b.truncate(at);
            format!("truncated at {at}")
        }
        2 | 3 => {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let at = rng.below(b.len());
                if kind == 2 {
                    b[at] ^= 1 << rng.below(8);
                } else {
                    b[at] = rng.next() as u8;
                }
            }
            format!("{n} bit flips / byte overwrites")
        }
        4 if !fields.is_empty() => {
            let f = fields[rng.below(fields.len())];
            let value = [0, u64::MAX, 1 << (f.width * 8 - 1), rng.next()][rng.below(4)];
            set_field(&mut b, f, value);
            format!("field at {} set to {value:#x}", f.offset)
        }
        5 => {
            let n = 1 + rng.below(64);
            b.extend(rng.bytes(n));
            format!("{n} bytes of garbage appended")
        }
        _ => {
            let at = rng.below(b.len() + 1);
            b.truncate(at);
            let n = rng.below(32);
            b.extend(rng.bytes(n));
            format!("truncated at {at}, {n} random bytes appended")
        }
    };
    (b, what)
}

fn set_field(b: &mut [u8], f: Field, value: u64) {
    let bytes = if f.big_endian {
        value.to_be_bytes()[8 - f.width..].to_vec()
    } else {
        value.to_le_bytes()[..f.width].to_vec()
    };
    b[f.offset..f.offset + f.width].copy_from_slice(&bytes);
}

/// A file the error may name, with its length (the bound for a `Data` offset).
#[derive(Clone, Copy)]
struct Named<'a> {
    path: &'a Path,
    len: u64,
}

/// Runs `read` as one fuzz case: no panic, no allocation beyond `max_alloc` bytes, and an
/// error must be `Data` or `Io` naming one of `files`.
fn check<T>(
    case: &str,
    files: &[Named<'_>],
    max_alloc: usize,
    read: impl FnOnce() -> wgtrain_models::Result<T>,
) {
    LARGEST.with(|m| m.set(0));
    let result = catch_unwind(AssertUnwindSafe(read));
    let largest = LARGEST.with(Cell::get);
    let result = result.unwrap_or_else(|_| panic!("{case}: the reader panicked"));
    assert!(
        largest <= max_alloc,
        "{case}: allocated {largest} bytes at once (allowed {max_alloc})"
    );
    let Err(err) = result else { return };
    let text = err.to_string();
    let (file, offset) = match &err {
        ModelError::Data { file, offset, .. } => (file, Some(*offset)),
        ModelError::Io { path, .. } => (path, None),
        other => panic!("{case}: expected a data or I/O error, got: {other}"),
    };
    let named = files
        .iter()
        .find(|f| f.path == file)
        .unwrap_or_else(|| panic!("{case}: the error names {}: {text}", file.display()));
    assert!(
        text.contains(&*named.path.to_string_lossy()),
        "{case}: {text}"
    );
    if let Some(offset) = offset {
        assert!(
            offset <= named.len,
            "{case}: offset {offset} past the end: {text}"
        );
    }
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgtrain-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `bytes` to `path`, returning it as a file an error may name.
fn write<'a>(path: &'a Path, bytes: &[u8]) -> Named<'a> {
    std::fs::write(path, bytes).unwrap();
    Named {
        path,
        len: bytes.len() as u64,
    }
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn idx_fields(ndims: usize) -> Vec<Field> {
    let magic = Field {
        offset: 0,
        width: 4,
        big_endian: true,
    };
    let dims = (0..ndims).map(|i| Field {
        offset: 4 + 4 * i,
        width: 4,
        big_endian: true,
    });
    std::iter::once(magic).chain(dims).collect()
}

/// Runs case `i` of a reader: every truncation first, then random mutations.
fn cases(valid: &[u8], fields: &[Field], seed: u64, mut run: impl FnMut(&[u8], &str)) {
    for at in 0..valid.len() {
        run(&valid[..at], &format!("truncated at {at}"));
    }
    for i in 0..iterations() {
        let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let (bytes, what) = mutate(&mut rng, valid, fields);
        run(&bytes, &format!("case {i} (seed {seed:#x}): {what}"));
    }
}

#[test]
fn idx_images_never_panic_and_errors_name_file_and_offset() {
    let d = dir();
    let pixels: Vec<u8> = (0..60).collect();
    let valid = idx(&[3, 4, 5], &pixels);
    let labels_path = d.join("labels.idx");
    let labels = write(&labels_path, &idx(&[3], &[1, 2, 3]));
    let images = d.join("images.idx");
    cases(&valid, &idx_fields(3), 0x1D8, |bytes, case| {
        let img = write(&images, bytes);
        // The parser alone, then the whole loader (which may blame the labels file).
        check(case, &[img], SMALL, || parse_idx_u8(img.path, bytes, 3));
        check(case, &[img, labels], SMALL, || {
            Mnist::load(images.as_path(), labels.path)
        });
    });
}

#[test]
fn gzipped_idx_labels_never_panic() {
    let d = dir();
    let valid = std::fs::read(vendored_dir().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let images_path = d.join("10k-images.idx");
    let images = write(&images_path, &idx(&[10_000, 1, 1], &[7; 10_000]));
    let labels = d.join("labels.gz");
    // Only the gzip trailer and header are fields here; the IDX header is compressed.
    let fields = [0, 4, valid.len() - 8, valid.len() - 4].map(|offset| Field {
        offset,
        width: 4,
        big_endian: false,
    });
    // Deflate expands at most ~1032:1; the decompressed MNIST labels are 10,008 bytes.
    let max_alloc = 1 << 23;
    cases(&valid, &fields, 0x62, |bytes, case| {
        let lab = write(&labels, bytes);
        // A gzip error's offset counts decompressed bytes, so only the path is checked.
        let unbounded = Named {
            len: u64::MAX,
            ..lab
        };
        check(case, &[unbounded], max_alloc, || {
            let (raw, _) = read_maybe_gz(lab.path)?;
            parse_idx_u8(lab.path, &raw, 1)
        });
        check(case, &[images, unbounded], max_alloc, || {
            Mnist::load(images.path, lab.path)
        });
    });
}

#[test]
fn cifar_batches_never_panic_and_errors_name_the_bad_file() {
    let d = dir();
    let mut valid = Vec::new();
    for label in [3u8, 9] {
        valid.push(label);
        valid.extend((0..3072).map(|i| (i * 7 % 256) as u8));
    }
    let good_path = d.join("good.bin");
    let good = write(&good_path, &valid);
    let path = d.join("fuzzed.bin");
    let label_fields = [0, 3073].map(|offset| Field {
        offset,
        width: 1,
        big_endian: false,
    });
    cases(&valid, &label_fields, 0xC1FA, |bytes, case| {
        let bad = write(&path, bytes);
        let files = [good.path.to_path_buf(), path.clone()];
        // The good file comes first, so an error must name the fuzzed one.
        check(case, &[bad], SMALL, || Cifar10::load_files(&files));
    });
}

/// Field mutations aimed at the safetensors header: its length, and bytes inside the
/// JSON replaced by JSON punctuation or digits (plausible but wrong headers).
fn json_garbage(rng: &mut Rng, valid: &[u8]) -> (Vec<u8>, String) {
    let mut b = valid.to_vec();
    let n = u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let alphabet = b"{}[]\":,0123456789-.eE \\nul";
    let k = 1 + rng.below(6);
    for _ in 0..k {
        let at = 8 + rng.below(n);
        b[at] = alphabet[rng.below(alphabet.len())];
    }
    (b, format!("{k} JSON header bytes replaced"))
}

#[test]
fn safetensors_checkpoints_never_panic_or_trust_the_header() {
    let model = zoo::mlp([2, 2, 1], &[3], 2, 1).unwrap();
    let session = Session::new(gpu(), model.graph, 0).unwrap();
    let d = dir();
    let saved = d.join("valid.safetensors");
    let position = Position {
        epoch: 1,
        batch: 2,
        steps: 3,
    };
    checkpoint::save(&saved, &session, &model.name, position).unwrap();
    let valid = std::fs::read(&saved).unwrap();
    let path = d.join("fuzzed.safetensors");
    let length = [Field {
        offset: 0,
        width: 8,
        big_endian: false,
    }];
    let mut json = Rng::new(0x15);
    // A successful load queues writes of every variable; submitting them after each case
    // keeps wgpu's staging memory from growing into the next case's allocation check.
    let flush = || session.gpu().queue().submit([]);
    cases(&valid, &length, 0x5AFE, |bytes, case| {
        let f = write(&path, bytes);
        check(case, &[f], SMALL, || {
            checkpoint::load(&path, &session, &model.name)
        });
        flush();
        let (bytes, what) = json_garbage(&mut json, &valid);
        let f = write(&path, &bytes);
        check(
            &format!("valid file, {what} (with {case})"),
            &[f],
            SMALL,
            || checkpoint::load(&path, &session, &model.name),
        );
        flush();
    });
    // The valid file still loads after all that.
    let loaded = checkpoint::load(&saved, &session, &model.name).unwrap();
    assert_eq!(loaded, position);
}

#[test]
fn huge_size_fields_are_refused_before_allocating() {
    let d = dir();
    // 2^32 - 1 images of 28x28 in a 16-byte file.
    let claim = idx(&[u32::MAX, 28, 28], &[]);
    let huge = d.join("huge.idx");
    let f = write(&huge, &claim);
    check("2^32 images", &[f], SMALL, || {
        parse_idx_u8(f.path, &claim, 3)
    });
    let err = parse_idx_u8(f.path, &claim, 3).unwrap_err().to_string();
    eprintln!("{err}");
    assert!(
        err.contains("truncated") && err.contains("4294967295"),
        "{err}"
    );
    let overflow = idx(&[u32::MAX; 3], &[]);
    let err = parse_idx_u8(f.path, &overflow, 3).unwrap_err().to_string();
    eprintln!("{err}");
    assert!(err.contains("overflow"), "{err}");

    let model = zoo::mlp([2, 2, 1], &[3], 2, 1).unwrap();
    let session = Session::new(gpu(), model.graph, 0).unwrap();
    let path = d.join("huge.safetensors");
    for claim in [u64::MAX, 1 << 40, 4096] {
        let mut bytes = claim.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let file = write(&path, &bytes);
        check("huge header length", &[file], SMALL, || {
            checkpoint::load(&path, &session, &model.name)
        });
        let err = checkpoint::load(&path, &session, &model.name).unwrap_err();
        eprintln!("{err}");
        assert!(err.to_string().contains(&claim.to_string()), "{err}");
    }
}

//! Hostile inputs: files written by an attacker (a tampered store, a
//! malicious training step) that claim sizes, shapes, lengths or nesting far
//! beyond what they hold. One test per attack, named for what it attacks.
//!
//! Each attack is explained on a thread with a 2 MiB stack (what a tokio
//! worker has) and must come back, without panicking, within a few seconds
//! and without allocating much more than the inputs' real size: a counting
//! allocator records the live bytes of that thread, and the peak is checked
//! against a bound tied to the inputs' length, never to what they claim.

use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use repro_explain::{explain, Class, Explanation, Format};

/// Counts the bytes live on each thread, so that the test can bound what
/// one explanation allocates. The only unsafe code of the crate's tests:
/// a `GlobalAlloc` cannot be written without it.
#[allow(unsafe_code)]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn add(n: isize) {
        let _ = LIVE.try_with(|live| {
            let now = live.get() + n;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    // SAFETY: every call is passed on to `System` unchanged; the counters
    // are const-initialised thread locals without destructors, which never
    // allocate.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            // SAFETY: the caller's contract is System's.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            // SAFETY: as above.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            add(-(layout.size() as isize));
            // SAFETY: as above.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            add(new_size as isize - layout.size() as isize);
            // SAFETY: as above.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Starts counting the current thread from zero.
    pub fn reset() {
        LIVE.with(|l| l.set(0));
        PEAK.with(|p| p.set(0));
    }

    /// The most bytes live at once on this thread since [`reset`].
    pub fn peak() -> usize {
        PEAK.with(|p| p.get().max(0) as usize)
    }
}

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

/// An attack still running after this long is taken for a hang (the
/// slowest takes about 4 s in a debug build on a loaded 2-core machine; the
/// hangs this guards against took from tens of seconds to forever). A
/// limit for hangs, not a speed goal: those live in the benchmarks.
const TIME_LIMIT: Duration = Duration::from_secs(60);
/// Stack of the thread explaining an attack.
const STACK: usize = 2 << 20;

/// Most bytes an explanation may hold at once: a fixed allowance plus a
/// multiple of what the two inputs really hold (a pickle of one-byte
/// opcodes keeps an opcode and an object, some 200 bytes, for each byte).
fn memory_limit(a: &[u8], b: &[u8]) -> usize {
    (128 << 20) + 256 * (a.len() + b.len())
}

/// Explains `a` against `b` as the file `path` on a fresh thread, failing
/// the test when it panics, overflows its stack, runs past [`TIME_LIMIT`]
/// or holds more than [`memory_limit`] bytes.
fn survive(path: &str, a: Vec<u8>, b: Vec<u8>) -> Explanation {
    let (tx, rx) = mpsc::channel();
    let name = path.to_string();
    let limit = memory_limit(&a, &b);
    let started = Instant::now();
    let worker = std::thread::Builder::new()
        .name(format!("explain {name}"))
        .stack_size(STACK)
        .spawn(move || {
            counting::reset();
            let e = explain(&name, &a, &b);
            let peak = counting::peak();
            drop(tx.send((e, peak)));
        })
        .expect("spawn");
    match rx.recv_timeout(TIME_LIMIT) {
        Ok((e, peak)) => {
            drop(worker.join());
            eprintln!(
                "{path}: explained in {:?}, {peak} bytes at most: {}",
                started.elapsed(),
                e.summary
            );
            assert!(
                peak <= limit,
                "{path}: held {peak} bytes at once, more than {limit}: {}",
                e.summary
            );
            e
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let why = match worker.join() {
                Err(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
                Ok(()) => String::new(),
            };
            panic!("{path}: the explainer panicked: {why}")
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{path}: still explaining after {:?}", started.elapsed())
        }
    }
}

/// The attack was explained without being taken at its word: either as its
/// format, or as bytes with the reason given.
fn graceful(e: &Explanation) {
    assert_ne!(e.class, Class::Identical, "{}", e.summary);
    assert!(!e.summary.is_empty());
}

fn has_detail(e: &Explanation, part: &str) -> bool {
    e.details.iter().any(|l| l.contains(part))
}

// ---------------------------------------------------------------- npy

fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_string();
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn npy_shape_whose_product_overflows() {
    // 2^32 * 2^32 * 16 elements: the product does not fit a u64, so the
    // size check cannot be made and must not be skipped either.
    let h = "{'descr': '|V8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }";
    let e = survive("a.npy", npy(h, &[1; 16]), npy(h, &[2; 16]));
    graceful(&e);
}

#[test]
fn npy_object_dtype_with_a_huge_shape() {
    let h = "{'descr': '|O', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }";
    let e = survive("a.npy", npy(h, &[1; 16]), npy(h, &[2; 16]));
    graceful(&e);
}

#[test]
fn npy_unicode_itemsize_that_overflows() {
    // `<U` sizes are in characters of 4 bytes: 2^62 * 4 overflows.
    let h = "{'descr': '<U4611686018427387904', 'fortran_order': False, 'shape': (1,), }";
    let e = survive("a.npy", npy(h, &[1; 8]), npy(h, &[2; 8]));
    graceful(&e);
}

#[test]
fn npy_shape_claiming_2_pow_62_doubles() {
    let h = "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }";
    let e = survive("a.npy", npy(h, &[1; 16]), npy(h, &[2; 16]));
    graceful(&e);
    assert_eq!(e.format, Format::Binary);
}

#[test]
fn npy_header_length_past_the_end() {
    let mut a = b"\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr': '<f8'".to_vec();
    let b = a.clone();
    a.push(b'x');
    let e = survive("a.npy", a, b);
    assert_eq!(e.format, Format::Binary);
}

#[test]
fn npy_header_nested_100k_deep() {
    let h = format!(
        "{{'descr': {}1{}, 'shape': (1,)}}",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    let e = survive("a.npy", npy(&h, &[1]), npy(&h, &[2]));
    assert_eq!(e.format, Format::Binary);
}

// ---------------------------------------------------------------- safetensors

fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn safetensors_header_length_claims_2_pow_63() {
    let mut a = safetensors(
        r#"{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
        &[1],
    );
    a[..8].copy_from_slice(&(1u64 << 63).to_le_bytes());
    let mut b = a.clone();
    b.push(2);
    let e = survive("m.safetensors", a, b);
    assert_eq!(e.format, Format::Binary);
}

#[test]
fn safetensors_tensor_claiming_2_pow_60_bytes() {
    let h = r#"{"x":{"dtype":"U8","shape":[1152921504606846976],"data_offsets":[0,1152921504606846976]}}"#;
    let e = survive(
        "m.safetensors",
        safetensors(h, &[1; 8]),
        safetensors(h, &[2; 8]),
    );
    assert_eq!(e.format, Format::Binary);
}

#[test]
fn safetensors_shape_whose_product_overflows() {
    let h =
        r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}"#;
    let e = survive(
        "m.safetensors",
        safetensors(h, &[1; 4]),
        safetensors(h, &[2; 4]),
    );
    assert_eq!(e.format, Format::Binary);
}

#[test]
fn safetensors_zero_dim_before_a_huge_shape_against_a_small_one() {
    // Zero elements, so no bytes needed, yet the other dims multiply past 2^63.
    let a = r#"{"x":{"dtype":"U8","shape":[0,4294967296,2147483648],"data_offsets":[0,0]}}"#;
    let b = r#"{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
    let e = survive("m.safetensors", safetensors(a, &[]), safetensors(b, &[7]));
    assert_eq!(e.format, Format::Safetensors);
    assert_eq!(e.class, Class::Unknown);
}

#[test]
fn safetensors_metadata_nested_100k_deep() {
    let h = format!(
        r#"{{"__metadata__":{}1{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let e = survive(
        "m.safetensors",
        safetensors(&h, &[1]),
        safetensors(&h, &[2]),
    );
    graceful(&e);
}

// ---------------------------------------------------------------- onnx

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn pb_bytes(num: u64, b: &[u8]) -> Vec<u8> {
    let mut out = varint(num << 3 | 2);
    out.extend(varint(b.len() as u64));
    out.extend_from_slice(b);
    out
}

fn pb_int(num: u64, v: u64) -> Vec<u8> {
    let mut out = varint(num << 3);
    out.extend(varint(v));
    out
}

/// A model whose graph holds the given initializers.
fn onnx(inits: &[Vec<u8>]) -> Vec<u8> {
    let graph: Vec<u8> = inits.iter().flat_map(|i| pb_bytes(5, i)).collect();
    [pb_int(1, 8), pb_bytes(7, &graph)].concat()
}

fn initializer(name: &str, data_type: u64, dims: &[u64], raw: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = dims.iter().flat_map(|&d| pb_int(1, d)).collect();
    out.extend(pb_int(2, data_type));
    out.extend(pb_bytes(8, name.as_bytes()));
    out.extend(pb_bytes(9, raw));
    out
}

#[test]
fn onnx_length_varint_pointing_past_the_end() {
    let mut a = pb_int(1, 8);
    a.extend(varint(7 << 3 | 2));
    a.extend(varint(1 << 62));
    a.extend_from_slice(b"tiny");
    let mut b = a.clone();
    b.push(0);
    let e = survive("m.onnx", a, b);
    assert_eq!(e.format, Format::Binary);
    assert!(has_detail(&e, "truncated"), "{:#?}", e.details);
}

#[test]
fn onnx_varint_longer_than_ten_bytes() {
    let mut a = vec![0xff; 64];
    a.push(0);
    let b = [vec![0x80; 64], vec![1]].concat();
    let e = survive("m.onnx", a, b);
    assert_eq!(e.format, Format::Binary);
}

#[test]
fn onnx_dims_whose_product_overflows() {
    let dims = [1 << 40, 1 << 40, 1 << 40];
    let a = onnx(&[initializer("w", 1, &dims, &[0; 4])]);
    let b = onnx(&[initializer("w", 1, &dims, &[1; 4])]);
    let e = survive("m.onnx", a, b);
    assert_eq!(e.format, Format::Binary);
}

#[test]
fn onnx_string_initializer_with_huge_dims_against_a_float_one() {
    // Strings have no element size, so their dims are never checked against
    // the data; comparing the two shapes must not multiply them out.
    let a = onnx(&[initializer("w", 1, &[1], &[0; 4])]);
    let b = onnx(&[initializer("w", 8, &[1 << 40, 1 << 40, 1 << 40], b"x")]);
    let e = survive("m.onnx", a, b);
    assert_eq!(e.format, Format::Onnx);
    assert_eq!(e.class, Class::Unknown);
}

#[test]
fn onnx_200k_distinct_field_numbers() {
    // Each field number is looked up among all fields: quadratic unless
    // the fields are grouped once.
    let mut a = pb_bytes(7, &[]);
    for n in 0..200_000u64 {
        a.extend(pb_int(100 + n, 0));
    }
    let mut b = a.clone();
    let last = b.len() - 1;
    b[last] = 1;
    let e = survive("m.onnx", a, b);
    assert_eq!(e.format, Format::Onnx);
}

#[test]
fn onnx_packed_dims_of_2_pow_63_each() {
    let packed: Vec<u8> = (0..8).flat_map(|_| varint(1 << 63)).collect();
    let mut init = pb_bytes(1, &packed);
    init.extend(pb_int(2, 7));
    init.extend(pb_bytes(8, b"w"));
    let a = onnx(&[init.clone()]);
    init.extend(pb_bytes(9, &[1; 8]));
    let b = onnx(&[init]);
    let e = survive("m.onnx", a, b);
    graceful(&e);
}

// ---------------------------------------------------------------- pickle

fn unicode(s: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

fn global(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}

fn int(n: i64) -> Vec<u8> {
    format!("I{n}\n").into_bytes()
}

fn tuple(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![b'('];
    for i in items {
        out.extend_from_slice(i);
    }
    out.push(b't');
    out
}

/// `numpy.dtype(typestr)`, with `state` (the BUILD tuple) when given.
fn dtype(typestr: &str, state: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = global("numpy", "dtype");
    out.extend(tuple(&[unicode(typestr), int(0), int(1)]));
    out.push(b'R');
    if let Some(s) = state {
        out.extend(s);
        out.push(b'b');
    }
    out
}

/// A structured dtype of `itemsize` bytes with one field `f` of type
/// `field` at `offset`.
fn structured(itemsize: i64, field: &str, offset: i64) -> Vec<u8> {
    let fields = [
        b"}".to_vec(),
        unicode("f"),
        tuple(&[dtype(field, None), int(offset)]),
        b"s".to_vec(),
    ]
    .concat();
    let state = tuple(&[
        int(3),
        unicode("|"),
        b"N".to_vec(),
        tuple(&[unicode("f")]),
        fields,
        int(itemsize),
        int(1),
        int(16),
    ]);
    dtype(&format!("V{itemsize}"), Some(state))
}

/// joblib's `NumpyArrayWrapper` with `dtype` and `shape`, its raw data
/// following the BUILD as joblib writes it.
fn joblib_array(dtype: &[u8], shape: &[i64], data: &[u8]) -> Vec<u8> {
    let mut out = global("joblib.numpy_pickle", "NumpyArrayWrapper");
    out.extend_from_slice(b")\x81}");
    out.extend(unicode("dtype"));
    out.extend_from_slice(dtype);
    out.push(b's');
    out.extend(unicode("shape"));
    out.extend(tuple(&shape.iter().map(|&n| int(n)).collect::<Vec<_>>()));
    out.push(b's');
    out.push(b'b');
    out.extend_from_slice(data);
    out
}

fn pickle(body: &[u8]) -> Vec<u8> {
    [b"\x80\x02".as_slice(), body, b"."].concat()
}

#[test]
fn pickle_tuples_nested_a_million_deep() {
    let nest = |leaf: u8| {
        let mut p = b"\x80\x02K".to_vec();
        p.push(leaf);
        p.extend(std::iter::repeat_n(0x85, 1_000_000));
        p.push(b'.');
        p
    };
    let e = survive("m.pkl", nest(1), nest(2));
    graceful(&e);
}

#[test]
fn pickle_lists_nested_a_million_deep() {
    let nest = |leaf: u8| {
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b']', 1_000_000));
        p.push(b'K');
        p.push(leaf);
        p.extend(std::iter::repeat_n(b'a', 1_000_000));
        p.push(b'.');
        p
    };
    let e = survive("m.pkl", nest(1), nest(2));
    graceful(&e);
}

#[test]
fn pickle_list_that_contains_itself() {
    // l = [x]; l.append(l)
    let a = pickle(b"]q\x00K\x01ah\x00a");
    let b = pickle(b"]q\x00K\x02ah\x00a");
    let e = survive("m.pkl", a, b);
    assert_eq!(e.format, Format::Pickle);
    assert_eq!(
        e.summary,
        "unknown: 1 objects differ, first at `obj[0]`: 1 vs 2"
    );
}

#[test]
fn pickle_one_big_list_shared_against_many_distinct_ones() {
    // expected: [L] * 20000 with L a list of 20000 ints (one object, shared
    // through the memo); actual: 20000 distinct empty lists. Each of the
    // 20000 pairs is distinct, and each walks L's children.
    let n = 20_000;
    let mut a = b"\x80\x02(]r\x00\x00\x00\x00(".to_vec();
    for _ in 0..n {
        a.extend_from_slice(b"K\x01");
    }
    a.push(b'e');
    for _ in 1..n {
        a.extend_from_slice(b"j\x00\x00\x00\x00");
    }
    a.extend_from_slice(b"l.");
    let mut b = b"\x80\x02(".to_vec();
    b.extend(std::iter::repeat_n(b']', n));
    b.extend_from_slice(b"l.");
    let e = survive("m.pkl", a, b);
    assert_eq!(e.format, Format::Pickle);
    assert_eq!(e.class, Class::Unknown);
}

#[test]
fn pickle_object_array_streams_nested_100k_deep() {
    // An object array is a nested pickle stream, run recursively; each one
    // can hold another object array.
    let level = joblib_array(&dtype("O8", None), &[1], &[]);
    let nest = |leaf: u8| {
        let mut p = b"\x80\x02".to_vec();
        for _ in 0..100_000 {
            p.extend_from_slice(&level);
        }
        p.extend_from_slice(&[b'K', leaf, b'.']);
        p.extend(std::iter::repeat_n(b'.', 100_000));
        p
    };
    let e = survive("m.pkl", nest(1), nest(2));
    graceful(&e);
}

#[test]
fn pickle_structured_dtype_with_a_negative_field_offset() {
    let dt = structured(16, "f8", -1);
    let a = pickle(&joblib_array(&dt, &[2], &[1; 32]));
    let b = pickle(&joblib_array(&dt, &[2], &[2; 32]));
    let e = survive("m.pkl", a, b);
    assert_eq!(e.format, Format::Pickle);
}

#[test]
fn pickle_structured_dtype_with_a_field_offset_of_2_pow_62() {
    let dt = structured(16, "S4", 1 << 62);
    let a = pickle(&joblib_array(&dt, &[2], &[1; 32]));
    let b = pickle(&joblib_array(&dt, &[2], &[2; 32]));
    let e = survive("m.pkl", a, b);
    assert_eq!(e.format, Format::Pickle);
}

#[test]
fn pickle_structured_dtype_with_a_unicode_field_of_2_pow_62_chars() {
    let dt = structured(16, "U4611686018427387904", 0);
    let a = pickle(&joblib_array(&dt, &[2], &[1; 32]));
    let b = pickle(&joblib_array(&dt, &[2], &[2; 32]));
    let e = survive("m.pkl", a, b);
    assert_eq!(e.format, Format::Pickle);
}

#[test]
fn pickle_array_claiming_2_pow_80_elements() {
    let a = pickle(&joblib_array(
        &dtype("f8", None),
        &[1 << 40, 1 << 40],
        &[1; 8],
    ));
    let b = pickle(&joblib_array(
        &dtype("f8", None),
        &[1 << 40, 1 << 40],
        &[2; 8],
    ));
    let e = survive("m.pkl", a, b);
    assert_eq!(e.format, Format::Binary);
}

#[test]
fn pickle_reconstructed_array_whose_itemsize_is_2_pow_62() {
    // numpy's own reduce: `_reconstruct` with a state of (version, shape,
    // dtype, fortran, raw bytes); the dtype's itemsize is the state's.
    let arr = |fill: u8| {
        let dt = dtype(
            "f8",
            Some(tuple(&[
                int(3),
                unicode("<"),
                b"N".to_vec(),
                b"N".to_vec(),
                b"N".to_vec(),
                int(1 << 62),
                int(1),
                int(0),
            ])),
        );
        let mut p = global("numpy.core.multiarray", "_reconstruct");
        p.extend(tuple(&[
            global("numpy", "ndarray"),
            tuple(&[int(0)]),
            b"C\x01b".to_vec(),
        ]));
        p.push(b'R');
        let mut raw = b"C\x10".to_vec();
        raw.extend_from_slice(&[fill; 16]);
        p.extend(tuple(&[
            int(1),
            tuple(&[int(1 << 40)]),
            dt,
            b"\x89".to_vec(),
            raw,
        ]));
        p.push(b'b');
        pickle(&p)
    };
    let e = survive("m.pkl", arr(1), arr(2));
    assert_eq!(e.format, Format::Pickle);
}

#[test]
fn pickle_lengths_claiming_2_pow_63_bytes() {
    for op in [
        [b"\x8e".as_slice(), &(1u64 << 63).to_le_bytes()].concat(), // BINBYTES8
        [b"\x8d".as_slice(), &(1u64 << 63).to_le_bytes()].concat(), // BINUNICODE8
        [b"\x96".as_slice(), &(1u64 << 63).to_le_bytes()].concat(), // BYTEARRAY8
        [b"\x95".as_slice(), &u64::MAX.to_le_bytes(), b"N"].concat(), // FRAME
        b"\x8b\xff\xff\xff\x7f".to_vec(),                           // LONG4
        b"B\xff\xff\xff\xff".to_vec(),                              // BINBYTES
        b"T\xff\xff\xff\x7f".to_vec(),                              // BINSTRING
    ] {
        let a = [b"\x80\x04".as_slice(), &op, b"x."].concat();
        let b = [b"\x80\x04".as_slice(), &op, b"y."].concat();
        let e = survive("m.pkl", a, b);
        graceful(&e);
    }
}

#[test]
fn joblib_zlib_bomb() {
    // 160 MiB of zeros in 160 KiB of zlib.
    let bomb = |tail: u8| {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(b"\x80\x04").expect("compress");
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..160 {
            z.write_all(&chunk).expect("compress");
        }
        z.write_all(&[tail]).expect("compress");
        z.finish().expect("compress")
    };
    let e = survive("m.joblib", bomb(1), bomb(2));
    graceful(&e);
}

// ---------------------------------------------------------------- zip

fn zip_of(entries: &[(&str, &[u8])], method: zip::CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .last_modified_time(
            zip::DateTime::from_date_and_time(2024, 5, 1, 0, 0, 0).expect("valid time"),
        );
    for (name, data) in entries {
        w.start_file(*name, opts).expect("start entry");
        w.write_all(data).expect("write entry");
    }
    w.finish().expect("finish zip").into_inner()
}

fn deflated(entries: &[(&str, &[u8])]) -> Vec<u8> {
    zip_of(entries, zip::CompressionMethod::Deflated)
}

fn stored(entries: &[(&str, &[u8])]) -> Vec<u8> {
    zip_of(entries, zip::CompressionMethod::Stored)
}

/// Overwrites the uncompressed size of every entry, in its local header
/// and in the central directory.
fn claim_size(zip: &mut [u8], size: u32) {
    for i in 0..zip.len().saturating_sub(4) {
        let at = match &zip[i..i + 4] {
            b"PK\x03\x04" => i + 22,
            b"PK\x01\x02" => i + 24,
            _ => continue,
        };
        if let Some(field) = zip.get_mut(at..at + 4) {
            field.copy_from_slice(&size.to_le_bytes());
        }
    }
}

#[test]
fn zip_entry_claiming_4_gib_uncompressed() {
    let mut a = stored(&[("w.bin", b"\x00\x01\x02\x03")]);
    let mut b = stored(&[("w.bin", b"\x00\x01\x02\x04")]);
    claim_size(&mut a, 0xffff_fff0);
    claim_size(&mut b, 0xffff_fff0);
    let e = survive("m.zip", a, b);
    graceful(&e);
}

#[test]
fn zip_bombs_nested_four_deep() {
    // 42.zip: 16 entries of 16 entries of 16 entries of 16 MiB of zeros,
    // the deepest entries differing in their last byte.
    let leaf = |tail: u8| {
        let mut d = vec![0u8; 16 << 20];
        d.push(tail);
        d
    };
    let level = |inner: &[u8]| {
        let names: Vec<String> = (0..16).map(|i| format!("{i}.zip")).collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), inner)).collect();
        deflated(&entries)
    };
    let side = |tail: u8| {
        let l1 = deflated(&[("0.bin", leaf(tail).as_slice())]);
        let l2 = level(&l1);
        let l3 = level(&l2);
        level(&l3)
    };
    let e = survive("bomb.zip", side(1), side(2));
    graceful(&e);
}

#[test]
fn zip_with_100k_entries() {
    let names: Vec<String> = (0..100_000).map(|i| format!("{i}")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let a = stored(&entries);
    let mut entries = entries;
    entries[99_999].1 = b"y";
    let b = stored(&entries);
    let e = survive("m.zip", a, b);
    assert_eq!(e.format, Format::Zip);
}

// ---------------------------------------------------------------- torch

/// One tensor of a `torch.save` pickle.
struct T<'a> {
    name: &'a str,
    key: &'a str,
    offset: i64,
    shape: &'a [i64],
    stride: &'a [i64],
}

/// A state_dict of `tensors`, all float32.
fn torch_pickle(tensors: &[T<'_>]) -> Vec<u8> {
    let mut p = b"\x80\x02".to_vec();
    p.extend(global("collections", "OrderedDict"));
    p.extend_from_slice(b")R");
    // Both globals are put in the memo and popped: tensors get them back.
    p.extend(global("torch._utils", "_rebuild_tensor_v2"));
    p.extend_from_slice(b"r\x00\x00\x00\x000");
    p.extend(global("torch", "FloatStorage"));
    p.extend_from_slice(b"r\x01\x00\x00\x000(");
    for t in tensors {
        p.extend(unicode(t.name));
        p.extend_from_slice(b"j\x00\x00\x00\x00");
        let pid = tuple(&[
            unicode("storage"),
            b"j\x01\x00\x00\x00".to_vec(),
            unicode(t.key),
            unicode("cpu"),
            int(1),
        ]);
        let ints = |v: &[i64]| tuple(&v.iter().map(|&n| int(n)).collect::<Vec<_>>());
        p.extend(tuple(&[
            [pid, b"Q".to_vec()].concat(),
            int(t.offset),
            ints(t.shape),
            ints(t.stride),
            b"\x89".to_vec(),
        ]));
        p.push(b'R');
    }
    p.extend_from_slice(b"u.");
    p
}

/// A `torch.save` zip of `pkl` and `storages` (key, bytes); a key with a
/// `/` is an entry name of its own.
fn torch_file(
    pkl: &[u8],
    storages: &[(String, Vec<u8>)],
    method: zip::CompressionMethod,
) -> Vec<u8> {
    let mut entries: Vec<(String, &[u8])> = vec![("archive/data.pkl".into(), pkl)];
    for (key, d) in storages {
        let name = if key.contains('/') {
            key.clone()
        } else {
            format!("archive/data/{key}")
        };
        entries.push((name, d));
    }
    let borrowed: Vec<(&str, &[u8])> = entries.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    zip_of(&borrowed, method)
}

#[test]
fn torch_tensor_with_zero_strides_and_2_pow_40_elements() {
    // A broadcast view: every element is the storage's first, so the
    // storage fits, but laying the view out would take 4 TiB.
    let side = |v: u8| {
        let pkl = torch_pickle(&[T {
            name: "w",
            key: "0",
            offset: 0,
            shape: &[1 << 20, 1 << 20],
            stride: &[0, 0],
        }]);
        torch_file(
            &pkl,
            &[("0".into(), vec![v; 4])],
            zip::CompressionMethod::Stored,
        )
    };
    let e = survive("m.pt", side(1), side(2));
    graceful(&e);
}

#[test]
fn torch_stride_times_size_overflows() {
    let side = |v: u8| {
        let pkl = torch_pickle(&[T {
            name: "w",
            key: "0",
            offset: 1 << 62,
            shape: &[4, 4],
            stride: &[1 << 62, 1 << 61],
        }]);
        torch_file(
            &pkl,
            &[("0".into(), vec![v; 64])],
            zip::CompressionMethod::Stored,
        )
    };
    let e = survive("m.pt", side(1), side(2));
    graceful(&e);
}

#[test]
fn torch_shape_of_2_pow_80_elements() {
    let side = |v: u8| {
        let pkl = torch_pickle(&[T {
            name: "w",
            key: "0",
            offset: 0,
            shape: &[1 << 40, 1 << 40],
            stride: &[1 << 40, 1],
        }]);
        torch_file(
            &pkl,
            &[("0".into(), vec![v; 64])],
            zip::CompressionMethod::Stored,
        )
    };
    let e = survive("m.pt", side(1), side(2));
    graceful(&e);
}

#[test]
fn torch_storages_that_are_zip_bombs() {
    // 40 storages of 8 MiB of zeros each, deflated to 8 KiB: all of a
    // torch file's storages are held at once.
    let side = |v: u8| {
        let keys: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let tensors: Vec<T<'_>> = keys
            .iter()
            .map(|k| T {
                name: k,
                key: k,
                offset: 0,
                shape: &[1],
                stride: &[1],
            })
            .collect();
        let pkl = torch_pickle(&tensors);
        let storages: Vec<(String, Vec<u8>)> = keys
            .iter()
            .map(|k| {
                let mut d = vec![0u8; 8 << 20];
                d[0] = v;
                (k.clone(), d)
            })
            .collect();
        torch_file(&pkl, &storages, zip::CompressionMethod::Deflated)
    };
    let e = survive("m.pt", side(1), side(2));
    graceful(&e);
}

#[test]
fn torch_pickle_whose_shared_objects_expand_exponentially() {
    // x0 = 1.5; x(i+1) = (x(i), x(i)): 64 levels reach 2^64 paths through
    // 64 objects.
    let side = |v: u8| {
        let mut p = b"\x80\x02G".to_vec();
        p.extend_from_slice(&(1.5f64 + f64::from(v)).to_be_bytes());
        for _ in 0..64 {
            p.extend_from_slice(b"q\x00h\x00\x86");
        }
        p.push(b'.');
        torch_file(&p, &[], zip::CompressionMethod::Stored)
    };
    let e = survive("m.pt", side(1), side(2));
    graceful(&e);
}

#[test]
fn torch_50k_tensors_with_their_storages() {
    let side = |v: u8| {
        let keys: Vec<String> = (0..50_000).map(|i| i.to_string()).collect();
        let tensors: Vec<T<'_>> = keys
            .iter()
            .map(|k| T {
                name: k,
                key: k,
                offset: 0,
                shape: &[1],
                stride: &[1],
            })
            .collect();
        let pkl = torch_pickle(&tensors);
        let storages: Vec<(String, Vec<u8>)> =
            keys.iter().map(|k| (k.clone(), vec![v; 4])).collect();
        torch_file(&pkl, &storages, zip::CompressionMethod::Stored)
    };
    let e = survive("m.pt", side(1), side(2));
    assert_eq!(e.format, Format::Torch);
}

#[test]
fn torch_100k_entries_besides_the_storages() {
    let side = |v: u8| {
        let pkl = torch_pickle(&[T {
            name: "w",
            key: "0",
            offset: 0,
            shape: &[1],
            stride: &[1],
        }]);
        let mut storages: Vec<(String, Vec<u8>)> = vec![("0".into(), vec![v; 4])];
        // Entries outside `data/`, so no tensor uses them.
        for i in 0..100_000 {
            storages.push((format!("archive/extra/{i}"), b"x".to_vec()));
        }
        torch_file(&pkl, &storages, zip::CompressionMethod::Stored)
    };
    let e = survive("m.pt", side(1), side(2));
    assert_eq!(e.format, Format::Torch);
}

// ---------------------------------------------------------------- text, csv, json

#[test]
fn text_with_no_line_in_common() {
    let a: String = (0..40_000).map(|i| format!("a{i}\n")).collect();
    let b: String = (0..40_000).map(|i| format!("b{i}\n")).collect();
    let e = survive("log.txt", a.into_bytes(), b.into_bytes());
    assert_eq!(e.format, Format::Text);
}

#[test]
fn csv_with_no_row_in_common() {
    let a: String = (0..40_000).map(|i| format!("a{i},1\n")).collect();
    let b: String = (0..40_000).map(|i| format!("b{i},1\n")).collect();
    let e = survive("t.csv", a.into_bytes(), b.into_bytes());
    assert_eq!(e.format, Format::Csv);
}

#[test]
fn csv_header_of_100k_columns_in_another_order() {
    let cols: Vec<String> = (0..100_000).map(|i| format!("c{i}")).collect();
    let a = format!("{}\n{}\n", cols.join(","), vec!["1"; cols.len()].join(","));
    let rev: Vec<&str> = cols.iter().rev().map(String::as_str).collect();
    let b = format!("{}\n{}\n", rev.join(","), vec!["2"; cols.len()].join(","));
    let e = survive("t.csv", a.into_bytes(), b.into_bytes());
    assert_eq!(e.format, Format::Csv);
}

#[test]
fn json_nested_100k_deep() {
    let a = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let b = format!("{}2{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = survive("m.json", a.into_bytes(), b.into_bytes());
    graceful(&e);
}

// ---------------------------------------------------------------- pickle objects shared through the memo

/// `X` of `n` bytes of `c`, put in the memo at `slot`.
fn long_string(c: u8, n: usize, slot: u32) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend(std::iter::repeat_n(c, n));
    out.push(b'r');
    out.extend_from_slice(&slot.to_le_bytes());
    out
}

fn get(slot: u32) -> Vec<u8> {
    let mut out = vec![b'j'];
    out.extend_from_slice(&slot.to_le_bytes());
    out
}

#[test]
fn pickle_dict_of_100k_entries_under_one_1mib_key() {
    // Each entry's key is the same 1 MiB string, met through the memo.
    let side = |v: u8| {
        let mut p = b"\x80\x02}(".to_vec();
        p.extend(long_string(b'k', 1 << 20, 0));
        p.extend_from_slice(&[b'K', v]);
        for _ in 1..100_000 {
            p.extend(get(0));
            p.extend_from_slice(&[b'K', v]);
        }
        p.extend_from_slice(b"u.");
        p
    };
    let e = survive("m.pkl", side(1), side(2));
    // Too large to compare in full: not to be called the same graph.
    assert_eq!(e.summary, "unknown: object graph too large to compare");
}

#[test]
fn pickle_100k_stack_globals_of_1mib_names() {
    let side = |v: u8| {
        let mut p = b"\x80\x04(".to_vec();
        p.extend(long_string(b'm', 1 << 20, 0));
        p.extend(long_string(b'n', 1 << 20, 1));
        p.push(b'0');
        p.push(b'0');
        for _ in 0..100_000 {
            p.extend(get(0));
            p.extend(get(1));
            p.push(0x93);
        }
        p.extend_from_slice(&[b'K', v, b'l', b'.']);
        p
    };
    let e = survive("m.pkl", side(1), side(2));
    graceful(&e);
}

#[test]
fn pickle_dtype_with_a_100k_entry_field_map_shared_by_many_arrays() {
    // Each field name is looked for among the 100k entries of the field
    // map, for each of the 1000 names, for each array using the dtype.
    let side = |v: u8| {
        let mut p = b"\x80\x02(".to_vec();
        p.extend(unicode("f"));
        p.extend_from_slice(b"r\x00\x00\x00\x00");
        p.extend(tuple(&[dtype("f8", None), int(0)]));
        p.extend_from_slice(b"r\x01\x00\x00\x00");
        p.extend(unicode("g"));
        p.extend_from_slice(b"r\x02\x00\x00\x00");
        p.extend_from_slice(b"000");
        let mut fmap = b"}(".to_vec();
        for _ in 0..100_000 {
            fmap.extend(get(0));
            fmap.extend(get(1));
        }
        fmap.push(b'u');
        let names: Vec<u8> = [vec![b'('], get(2).repeat(1000), vec![b't']].concat();
        let state = tuple(&[
            int(3),
            unicode("|"),
            b"N".to_vec(),
            names,
            fmap,
            int(8),
            int(1),
            int(16),
        ]);
        p.extend(dtype("V8", Some(state)));
        p.extend_from_slice(b"r\x03\x00\x00\x000");
        for _ in 0..100 {
            p.extend(joblib_array(&get(3), &[1], &[v; 8]));
        }
        p.extend_from_slice(b"l.");
        p
    };
    let e = survive("m.pkl", side(1), side(2));
    graceful(&e);
}

#[test]
fn torch_pickle_whose_dict_keys_share_one_1mib_string() {
    // {key: {0: v, ..., 1999: v}}: each value's path starts with the key.
    let side = |v: u8| {
        let mut p = b"\x80\x02}".to_vec();
        p.extend(long_string(b'k', 1 << 20, 0));
        p.extend_from_slice(b"}(");
        for i in 0..2000 {
            p.extend(int(i));
            p.extend_from_slice(&[b'K', v]);
        }
        p.extend_from_slice(b"us.");
        torch_file(&p, &[], zip::CompressionMethod::Stored)
    };
    let e = survive("m.pt", side(1), side(2));
    graceful(&e);
}

#[test]
fn pickle_million_children_under_a_long_deep_path() {
    // 190 dicts nested under one 100-char key, the innermost holding a
    // list of a million objects: a path searched for each of them would
    // be 20 KB long.
    let side = |v: u8| {
        let mut p = b"\x80\x02}".to_vec();
        p.extend(long_string(b'k', 100, 0));
        for _ in 0..189 {
            p.push(b'}');
            p.extend(get(0));
        }
        p.push(b'(');
        p.extend(std::iter::repeat_n(b'N', 1_000_000));
        p.extend_from_slice(&[b'K', v, b'l']);
        p.extend(std::iter::repeat_n(b's', 190));
        p.push(b'.');
        p
    };
    let e = survive("m.pkl", side(1), side(2));
    graceful(&e);
}

#[test]
fn torch_strings_that_differ_past_what_is_shown_are_not_called_the_same() {
    // A plain value of the saved object, a long string, differs only after
    // the characters an explanation shows: the explanation must not say
    // the values are the same (nor classify it as metadata).
    let side = |tail: &str| {
        let note = format!("{}{tail}", "approved by the validation team ".repeat(4));
        let mut p = b"\x80\x02}".to_vec();
        p.extend(unicode("note"));
        p.extend(unicode(&note));
        p.extend_from_slice(b"s.");
        torch_file(&p, &[], zip::CompressionMethod::Stored)
    };
    let e = survive("m.pt", side("yes"), side("no!"));
    assert_eq!(e.format, Format::Torch, "{e:#?}");
    assert_eq!(e.class, Class::Unknown, "{e:#?}");
    assert!(e.summary.contains("`note`"), "{e:#?}");
    assert!(!e.summary.contains("same tensors and values"), "{e:#?}");
    // The detail shows where the texts part, not two equal-looking prefixes.
    assert!(
        e.details.iter().any(|l| l.starts_with("`note`: ")
            && l.contains("team yes\" (131 chars, differs from char 129)")
            && l.contains("team no!\" (131 chars, differs from char 129)")),
        "{e:#?}"
    );
}

#[test]
fn pickle_strings_that_differ_past_what_is_shown_say_where() {
    let side = |tail: &str| {
        let mut p = b"\x80\x02}".to_vec();
        p.extend(unicode("note"));
        p.extend(unicode(&format!("{}{tail}", "x".repeat(200))));
        p.extend_from_slice(b"s.");
        p
    };
    let e = survive("m.pkl", side("yes"), side("no!"));
    assert_eq!(e.format, Format::Pickle, "{e:#?}");
    assert_eq!(e.class, Class::Unknown, "{e:#?}");
    assert!(
        e.summary
            .contains("xyes\" (203 chars, differs from char 201) vs ")
            && e.summary
                .contains("xno!\" (203 chars, differs from char 201)"),
        "{e:#?}"
    );
}

#[test]
fn torch_numpy_arrays_that_differ_are_not_called_the_same_values() {
    // A checkpoint holding a NumPy array (pickled by numpy's
    // `_reconstruct`) besides its tensors: when only the array differs,
    // the explanation must not claim the values are the same.
    let side = |second: f64| {
        let mut data = 1.0f64.to_le_bytes().to_vec();
        data.extend_from_slice(&second.to_le_bytes());
        let mut raw = vec![b'C', data.len() as u8];
        raw.extend(data);
        let f8 = dtype(
            "f8",
            Some(tuple(&[
                int(3),
                unicode("<"),
                b"N".to_vec(),
                b"N".to_vec(),
                b"N".to_vec(),
                int(-1),
                int(-1),
                int(0),
            ])),
        );
        let mut p = b"\x80\x02}".to_vec();
        p.extend(unicode("stats"));
        p.extend(global("numpy.core.multiarray", "_reconstruct"));
        p.extend(tuple(&[
            global("numpy", "ndarray"),
            tuple(&[int(0)]),
            vec![b'C', 1, b'b'],
        ]));
        p.push(b'R');
        p.extend(tuple(&[
            int(1),
            tuple(&[int(2)]),
            f8,
            b"\x89".to_vec(),
            raw,
        ]));
        p.extend_from_slice(b"bs.");
        torch_file(&p, &[], zip::CompressionMethod::Stored)
    };
    let bumped = f64::from_bits(2.0f64.to_bits() + 1);
    let e = survive("m.pt", side(2.0), side(bumped));
    assert_eq!(e.format, Format::Torch, "{e:#?}");
    assert_ne!(e.class, Class::MetadataOnly, "{e:#?}");
    assert!(!e.summary.contains("same tensors and values"), "{e:#?}");
    assert!(e.summary.contains("stats"), "{e:#?}");
}

#[test]
fn torch_pickles_that_differ_only_in_memo_numbers_keep_the_same_values() {
    // The counterpart of the two tests above: when the pickles differ only
    // in how they say it (memo slots), "same tensors and values" is true.
    let side = |slot: u8| {
        let mut p = b"\x80\x02}q".to_vec();
        p.push(slot);
        p.extend(unicode("note"));
        p.extend(unicode("approved"));
        p.extend_from_slice(b"s.");
        torch_file(&p, &[], zip::CompressionMethod::Stored)
    };
    let e = survive("m.pt", side(0), side(7));
    assert_eq!(e.format, Format::Torch, "{e:#?}");
    assert_eq!(e.class, Class::OrderOnly, "{e:#?}");
    assert!(e.summary.ends_with("(same tensors and values)"), "{e:#?}");
}

//! Finding and opening OpenBLAS at run time (dlopen through `libloading`), once per process, and a
//! bounds-checked `sgemm` over it.
//!
//! The library is the one in PyPI's `scipy-openblas32` wheel (`scripts/fetch-assets.sh` puts it
//! in `assets/openblas/`): OpenBLAS built with DYNAMIC_ARCH (it picks its kernels for the CPU at
//! load time), pthreads, 32-bit integers, and every symbol prefixed `scipy_` so it can never clash
//! with another BLAS in the process. Nothing links against it: without it rmtrain builds and runs
//! on flex's own gemm.
//!
//! Where it is looked for, first match wins:
//! 1. env `RMTRAIN_OPENBLAS`: a file path, or `off` to never load one;
//! 2. `assets/openblas/libscipy_openblas.so` under the current directory;
//! 3. the same under the executable's ancestors `../..` and `../../..` (`target/release/rmtrain`,
//!    and `target/release/{deps,examples}/*` for tests and examples, in a checkout).
//!
//! No library found is the ordinary case on a machine without the asset and stays silent (see
//! [`crate::backend`]); a library that exists but does not open or lacks a symbol, or an explicit
//! `RMTRAIN_OPENBLAS` path that does not exist, prints one warning line on stderr. Both fall back
//! to flex.

use libloading::Library;
use std::ffi::{CStr, OsStr, c_char, c_int};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The library's file name inside an assets folder.
const LIB_FILE: &str = "libscipy_openblas.so";
/// Env var naming the library file (or `off`).
pub const ENV_PATH: &str = "RMTRAIN_OPENBLAS";

// CBLAS enum values (cblas.h).
const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

type SgemmFn = unsafe extern "C" fn(
    order: c_int,
    trans_a: c_int,
    trans_b: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: f32,
    a: *const f32,
    lda: c_int,
    b: *const f32,
    ldb: c_int,
    beta: f32,
    c: *mut f32,
    ldc: c_int,
);
type SetThreadsFn = unsafe extern "C" fn(c_int);
type GetConfigFn = unsafe extern "C" fn() -> *const c_char;

/// An opened OpenBLAS: the library (kept open for the life of the process, so the function
/// pointers below stay valid) and the entry points rmtrain calls.
pub struct OpenBlas {
    _lib: Library,
    sgemm: SgemmFn,
    set_num_threads: SetThreadsFn,
    /// `scipy_openblas_get_config()`, e.g. "OpenBLAS 0.3.34  DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64".
    pub config: String,
}

/// What the process ended up with: OpenBLAS, or flex with the reason.
pub enum Loaded {
    Blas(OpenBlas),
    Flex(String),
}

static LOADED: OnceLock<Loaded> = OnceLock::new();

/// The process's OpenBLAS, opened on first use; `None` means flex's own gemm.
pub fn get() -> Option<&'static OpenBlas> {
    match loaded() {
        Loaded::Blas(lib) => Some(lib),
        Loaded::Flex(_) => None,
    }
}

pub fn loaded() -> &'static Loaded {
    LOADED.get_or_init(|| {
        let lookup = lookup(std::env::var_os(ENV_PATH).as_deref(), std::env::current_dir().ok().as_deref(), std::env::current_exe().ok().as_deref());
        let loaded = load_first(&lookup);
        if let Err(Some(warning)) = &loaded {
            eprintln!("warning: {warning}; Linear layers run on flex's own gemm");
        }
        match loaded {
            Ok(lib) => {
                // One OpenBLAS thread per call: rmtrain runs one model replica per core, each
                // calling sgemm from its own thread (see `crate::set_threads`).
                lib.set_threads(crate::DEFAULT_THREADS);
                Loaded::Blas(lib)
            }
            Err(why) => Loaded::Flex(why.unwrap_or_else(|| describe(&lookup))),
        }
    })
}

/// Where to look for the library, from the env var, the current directory and the executable.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    /// `RMTRAIN_OPENBLAS=off`.
    Off,
    /// `RMTRAIN_OPENBLAS=<path>`: that file, which must exist.
    Explicit(PathBuf),
    /// The default places, in order; none need exist.
    Search(Vec<PathBuf>),
}

pub fn lookup(env: Option<&OsStr>, cwd: Option<&Path>, exe: Option<&Path>) -> Lookup {
    match env {
        Some(v) if v == "off" => return Lookup::Off,
        Some(v) if !v.is_empty() => return Lookup::Explicit(PathBuf::from(v)),
        _ => {}
    }
    let in_assets = |root: &Path| root.join("assets").join("openblas").join(LIB_FILE);
    let mut places: Vec<PathBuf> = cwd.map(in_assets).into_iter().collect();
    // target/release/rmtrain -> ../.. ; target/release/deps/<test> -> ../../..
    if let Some(exe_dir) = exe.and_then(Path::parent) {
        places.extend(exe_dir.ancestors().skip(2).take(2).map(in_assets));
    }
    Lookup::Search(places)
}

fn describe(lookup: &Lookup) -> String {
    match lookup {
        Lookup::Off => format!("{ENV_PATH}=off"),
        Lookup::Explicit(p) => format!("{ENV_PATH}={}", p.display()),
        Lookup::Search(places) => {
            let places: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
            format!("no OpenBLAS found (looked for {}; scripts/fetch-assets.sh fetches it)", places.join(", "))
        }
    }
}

/// Opens the first library `lookup` finds. Err(None): none there (silent); Err(Some(warning)): one
/// was there (or was asked for) but is unusable.
fn load_first(lookup: &Lookup) -> Result<OpenBlas, Option<String>> {
    match lookup {
        Lookup::Off => Err(None),
        Lookup::Explicit(path) if !path.is_file() => Err(Some(format!("{ENV_PATH}={}: no such file", path.display()))),
        Lookup::Explicit(path) => OpenBlas::open(path).map_err(Some),
        Lookup::Search(places) => match places.iter().find(|p| p.is_file()) {
            Some(path) => OpenBlas::open(path).map_err(Some),
            None => Err(None),
        },
    }
}

/// The operand of a product: a row-major matrix of `rows` × `cols` (as stored, before `trans`),
/// `ld` apart between rows.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
    /// Use the transpose of the stored matrix.
    pub trans: bool,
}

impl<'a> Matrix<'a> {
    /// A dense row-major matrix.
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Matrix { data, rows, cols, ld: cols, trans: false }
    }

    pub fn t(self) -> Self {
        Matrix { trans: !self.trans, ..self }
    }

    /// Rows and columns of the operand as used (after `trans`).
    fn op_dims(&self) -> (usize, usize) {
        if self.trans { (self.cols, self.rows) } else { (self.rows, self.cols) }
    }

    /// Every element the library may read lies inside `data`, and the sizes fit its int32.
    fn check(&self, what: &str) {
        assert!(self.ld >= self.cols.max(1), "{what}: ld {} < {} columns", self.ld, self.cols);
        let needed = if self.rows == 0 { 0 } else { (self.rows - 1) * self.ld + self.cols };
        assert!(self.data.len() >= needed, "{what}: {} elements for a {}x{} matrix (ld {})", self.data.len(), self.rows, self.cols, self.ld);
        assert!(int(self.ld).is_some() && int(self.rows).is_some() && int(self.cols).is_some(), "{what}: sizes beyond int32");
    }
}

fn int(n: usize) -> Option<c_int> {
    c_int::try_from(n).ok()
}

impl OpenBlas {
    fn open(path: &Path) -> Result<OpenBlas, String> {
        let fail = |e: libloading::Error| format!("OpenBLAS at {} is unusable: {e}", path.display());
        #[allow(unsafe_code)]
        // SAFETY: opening runs the library's initializers. The file is the scipy-openblas32 build
        // (or one the user named): its initializer only detects the CPU and starts OpenBLAS's
        // thread pool, touching no state of ours. The symbols are read with the exact C
        // signatures of its cblas.h (blasint = int32 in this "32" build) and copied out as plain
        // function pointers that `_lib`, stored beside them and never closed before exit, keeps
        // valid.
        unsafe {
            let lib = Library::new(path).map_err(fail)?;
            let sgemm = *lib.get::<SgemmFn>(b"scipy_cblas_sgemm\0").map_err(fail)?;
            let set_num_threads = *lib.get::<SetThreadsFn>(b"scipy_openblas_set_num_threads\0").map_err(fail)?;
            let get_config = *lib.get::<GetConfigFn>(b"scipy_openblas_get_config\0").map_err(fail)?;
            let config = get_config();
            let config = if config.is_null() { String::from("OpenBLAS") } else { CStr::from_ptr(config).to_string_lossy().trim().to_string() };
            Ok(OpenBlas { _lib: lib, sgemm, set_num_threads, config })
        }
    }

    /// Threads OpenBLAS may use per call (its pool is shared by every caller).
    pub fn set_threads(&self, n: usize) {
        let n = int(n.max(1)).unwrap_or(c_int::MAX);
        #[allow(unsafe_code)]
        // SAFETY: a plain int argument; OpenBLAS sizes its pool within its MAX_THREADS itself.
        unsafe {
            (self.set_num_threads)(n)
        }
    }

    /// c = a·b + beta·c, `c` dense row-major with a's rows and b's columns (as used). beta = 0
    /// ignores c's contents.
    pub fn sgemm(&self, a: Matrix, b: Matrix, beta: f32, c: &mut [f32]) {
        let ((m, k), (k2, n)) = (a.op_dims(), b.op_dims());
        assert_eq!(k, k2, "sgemm: inner dims {k} vs {k2}");
        a.check("sgemm a");
        b.check("sgemm b");
        assert_eq!(c.len(), m * n, "sgemm: c holds {} elements for {m}x{n}", c.len());
        #[cfg(test)]
        tests::count_call();
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            // The product is empty; what remains is beta·c (OpenBLAS would do the same).
            c.iter_mut().for_each(|v| *v = if beta == 0.0 { 0.0 } else { *v * beta });
            return;
        }
        let trans = |t: bool| if t { TRANS } else { NO_TRANS };
        let dim = |d: usize| int(d).expect("sgemm: sizes beyond int32 (checked above)");
        #[allow(unsafe_code)]
        // SAFETY: `check` and the asserts above keep every element OpenBLAS reads inside `a.data`
        // and `b.data` (ld ≥ cols, (rows−1)·ld + cols ≤ len, all in int32), and c, dense m×n with
        // ldc = n, is exactly `c`, borrowed mutably for the call; OpenBLAS keeps no pointer after
        // it returns. Concurrent calls from several threads are supported by this threaded build.
        unsafe {
            (self.sgemm)(
                ROW_MAJOR,
                trans(a.trans),
                trans(b.trans),
                dim(m),
                dim(n),
                dim(k),
                1.0,
                a.data.as_ptr(),
                dim(a.ld),
                b.data.as_ptr(),
                dim(b.ld),
                beta,
                c.as_mut_ptr(),
                dim(n.max(1)),
            )
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        static CALLS: Cell<usize> = const { Cell::new(0) };
    }

    pub(crate) fn count_call() {
        CALLS.with(|c| c.set(c.get() + 1));
    }

    /// sgemm calls made on this thread so far (the parity tests check the BLAS path really ran).
    pub(crate) fn calls() -> usize {
        CALLS.with(Cell::get)
    }

    #[test]
    fn lookup_honours_env_then_cwd_then_exe_ancestors() {
        let (cwd, exe) = (Path::new("/w/repo"), Path::new("/w/repo/target/release/deps/t-123"));
        assert_eq!(lookup(Some(OsStr::new("off")), Some(cwd), Some(exe)), Lookup::Off);
        assert_eq!(lookup(Some(OsStr::new("/x/lib.so")), Some(cwd), Some(exe)), Lookup::Explicit("/x/lib.so".into()));
        let lib = |root: &str| PathBuf::from(root).join("assets/openblas/libscipy_openblas.so");
        let want = Lookup::Search(vec![lib("/w/repo"), lib("/w/repo/target"), lib("/w/repo")]);
        assert_eq!(lookup(None, Some(cwd), Some(exe)), want);
        assert_eq!(lookup(Some(OsStr::new("")), Some(cwd), Some(exe)), want, "an empty value means unset");
        // the binary itself: target/release/rmtrain -> repo/assets
        let bin = lookup(None, None, Some(Path::new("/w/repo/target/release/rmtrain")));
        assert_eq!(bin, Lookup::Search(vec![lib("/w/repo"), lib("/w")]));
    }

    #[test]
    fn bogus_library_paths_fall_back_to_flex() {
        // a missing default place: silent
        assert!(matches!(load_first(&Lookup::Search(vec!["/nonexistent/libscipy_openblas.so".into()])), Err(None)));
        assert!(matches!(load_first(&Lookup::Off), Err(None)));
        // an explicit path that is not there, and a file that is not a library: a warning each
        let missing = load_first(&Lookup::Explicit("/nonexistent/libscipy_openblas.so".into()));
        assert!(matches!(&missing, Err(Some(w)) if w.contains("no such file")), "{:?}", missing.err());
        let not_a_library = load_first(&Lookup::Explicit(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")));
        assert!(matches!(&not_a_library, Err(Some(w)) if w.contains("unusable")), "{:?}", not_a_library.err());
    }
}

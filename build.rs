//! With `--features tch`, give the binary and the tests an rpath to the libtorch they were linked
//! against (torch-sys finds it in the venv of scripts/setup-libtorch.sh and passes the folder on as
//! DEP_TCH_LIBTORCH_LIB), so they run without LD_LIBRARY_PATH.
//!
//! With `--features cuda` and `RMTRAIN_CUDA_WITHOUT_LLVM=1`: link without cubecl's LLVM bundle.
//! cubecl-cuda always references its LLVM/NVPTX compiler, and the bundle it links is downloaded
//! from GitHub by tracel-llvm-bundler's build script; where that cannot be reached, `DOCS_RS=1`
//! skips the download and this leaves the LLVM symbols unresolved. rmtrain builds cubecl-cuda
//! with `cpp` (kernels compiled by NVRTC), so no LLVM function is ever called.
//!
//! Without those features this does nothing.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=RMTRAIN_CUDA_WITHOUT_LLVM");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    let cuda = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
    if cuda && std::env::var("RMTRAIN_CUDA_WITHOUT_LLVM").is_ok_and(|v| v == "1") {
        println!("cargo:rustc-link-arg=-Wl,--unresolved-symbols=ignore-all");
        // Bind functions on first call (Rust links with -z now): the LLVM ones are never called.
        println!("cargo:rustc-link-arg=-Wl,-z,lazy");
    }
}

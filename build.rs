//! With `--features tch`, give the binary and the tests an rpath to the libtorch they were linked
//! against (torch-sys finds it in the venv of scripts/setup-libtorch.sh and passes the folder on as
//! DEP_TCH_LIBTORCH_LIB), so they run without LD_LIBRARY_PATH. Without the feature this does nothing.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}

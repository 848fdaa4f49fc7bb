//! The LibTorch build (feature `tch`) records LibTorch's library folder (`$LIBTORCH/lib`) as the
//! binaries' run path, so they start without `LD_LIBRARY_PATH` (scripts/build-gpu.sh).

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TCH").is_some()
        && let Some(dir) = std::env::var_os("LIBTORCH")
    {
        let lib = std::path::Path::new(&dir).join("lib");
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", lib.display());
    }
}

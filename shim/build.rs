// The C library is libvdestack.so.0, as Debian's libvdestack is, so programs linked
// against either run on the other.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libvdestack.so.0");
}

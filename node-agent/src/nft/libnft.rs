//! nftables' own library, `libnftables.so.1`, loaded at run time and driven in-process: the same
//! parser, cache and batch code as the `nft` binary (which is a thin front end to it), without a
//! process per transaction and with a context that stays open.
//!
//! ```text
//!   script ──► nft_run_cmd_from_buffer(ctx of this netns) ──► one netlink batch ──► kernel commit
//!                      │ non-zero                                  (ctx's socket stays open)
//!                      ▼
//!              nft_ctx_get_error_buffer: nft's own message, as `nft -f` prints it
//! ```
//!
//! Measured on these machines (docs/adr/0303, addendum 2026-12-02 b): a small transaction takes
//! 0.1 ms this way against 7-9 ms through `nft -f -`, and one that deletes a rule or a set element
//! no longer waits 10-20 ms for the kernel's grace period at the socket's close
//! ([`super::session`]).
//!
//! Invariants:
//! - the library is looked up once per process (`dlopen`, never closed); where it is missing,
//!   [`LibNft::load`] says so and the caller uses the binary;
//! - a context is used by one thread at a time and only in the network namespace it was made in
//!   ([`super::session::PerNetns`]);
//! - after every run both buffers are read, which also rewinds them for the next run.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::OnceLock;

use super::session::PerNetns;
use crate::Error;

/// The library's soname (Debian package `libnftables1`, a dependency of `nftables`).
pub const LIBRARY: &str = "libnftables.so.1";

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxInt = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxStr = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunBuffer = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type SetFlags = unsafe extern "C" fn(*mut c_void, u32);

/// `NFT_CTX_OUTPUT_STATELESS` of libnftables.h: listings without counter values and quota
/// usage, as `nft --stateless list` prints them.
const OUTPUT_STATELESS: u32 = 1 << 2;

/// The entry points weft uses (libnftables' stable ABI, symbol version LIBNFTABLES_1).
struct Lib {
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    buffer_output: CtxInt,
    buffer_error: CtxInt,
    get_output: CtxStr,
    get_error: CtxStr,
    output_set_flags: SetFlags,
    run: RunBuffer,
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".to_owned()
    } else {
        // SAFETY: non-NULL, NUL-terminated (see above).
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

fn load() -> Result<Lib, String> {
    let name = CString::new(LIBRARY).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated name; the handle is kept for the life of the process.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(dl_error());
    }
    let sym = |s: &CStr| -> Result<*mut c_void, String> {
        // SAFETY: a live handle and a NUL-terminated symbol name.
        let p = unsafe { libc::dlsym(handle, s.as_ptr()) };
        if p.is_null() {
            Err(format!("{}: {}", s.to_string_lossy(), dl_error()))
        } else {
            Ok(p)
        }
    };
    // SAFETY: each symbol has the C signature of libnftables.h that its type states.
    unsafe {
        Ok(Lib {
            ctx_new: std::mem::transmute::<*mut c_void, CtxNew>(sym(c"nft_ctx_new")?),
            ctx_free: std::mem::transmute::<*mut c_void, CtxFree>(sym(c"nft_ctx_free")?),
            buffer_output: std::mem::transmute::<*mut c_void, CtxInt>(sym(
                c"nft_ctx_buffer_output",
            )?),
            buffer_error: std::mem::transmute::<*mut c_void, CtxInt>(sym(c"nft_ctx_buffer_error")?),
            get_output: std::mem::transmute::<*mut c_void, CtxStr>(sym(
                c"nft_ctx_get_output_buffer",
            )?),
            get_error: std::mem::transmute::<*mut c_void, CtxStr>(sym(
                c"nft_ctx_get_error_buffer",
            )?),
            output_set_flags: std::mem::transmute::<*mut c_void, SetFlags>(sym(
                c"nft_ctx_output_set_flags",
            )?),
            run: std::mem::transmute::<*mut c_void, RunBuffer>(sym(c"nft_run_cmd_from_buffer")?),
        })
    }
}

fn library() -> Result<&'static Lib, &'static str> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(load).as_ref().map_err(String::as_str)
}

/// One libnftables context (its netlink socket is opened in the calling thread's namespace).
struct Ctx {
    lib: &'static Lib,
    ptr: *mut c_void,
}

// SAFETY: a context is plain heap state plus a socket; PerNetns hands it to one thread at a time.
unsafe impl Send for Ctx {}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: a context from ctx_new, freed once.
        unsafe { (self.lib.ctx_free)(self.ptr) }
    }
}

impl Ctx {
    fn new(lib: &'static Lib) -> Result<Ctx, Error> {
        // SAFETY: NFT_CTX_DEFAULT (0): a context with its own netlink socket.
        let ptr = unsafe { (lib.ctx_new)(0) };
        if ptr.is_null() {
            return Err(Error::NftFailed {
                what: "create a libnftables context".to_owned(),
                status: "nft_ctx_new returned NULL".to_owned(),
                stderr: String::new(),
            });
        }
        let ctx = Ctx { lib, ptr };
        // SAFETY: a live context.
        let buffered = unsafe { (lib.buffer_output)(ptr) == 0 && (lib.buffer_error)(ptr) == 0 };
        if !buffered {
            return Err(Error::NftFailed {
                what: "buffer libnftables' output".to_owned(),
                status: "nft_ctx_buffer_output/error failed".to_owned(),
                stderr: String::new(),
            });
        }
        // SAFETY: a live context. Output flags change only what `list` prints.
        unsafe { (lib.output_set_flags)(ptr, OUTPUT_STATELESS) };
        Ok(ctx)
    }

    /// Reads (and rewinds) one of the context's buffers.
    fn take(&self, get: CtxStr) -> String {
        // SAFETY: a live, buffered context; the pointer is valid until the next run.
        let p = unsafe { get(self.ptr) };
        if p.is_null() {
            return String::new();
        }
        // SAFETY: NUL-terminated by libnftables.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Runs `script` as `nft -f` would: one transaction, all of it or nothing.
    fn run(&mut self, script: &CStr, what: &str) -> Result<String, Error> {
        // SAFETY: a live context and a NUL-terminated script.
        let rc = unsafe { (self.lib.run)(self.ptr, script.as_ptr()) };
        let (out, err) = (
            self.take(self.lib.get_output),
            self.take(self.lib.get_error),
        );
        if rc == 0 {
            Ok(out)
        } else {
            Err(Error::NftFailed {
                what: what.to_owned(),
                status: format!("libnftables returned {rc}"),
                stderr: err.trim().to_owned(),
            })
        }
    }
}

/// In-process nftables, for the calling thread's network namespace.
#[derive(Debug, Clone, Copy)]
pub struct LibNft {
    _private: (),
}

/// Contexts by namespace, shared by every [`LibNft`] of the process.
static CONTEXTS: PerNetns<Ctx> = PerNetns::new();

impl LibNft {
    /// The library, or why it cannot be used (it is not installed, or lacks a symbol).
    pub fn load() -> Result<LibNft, &'static str> {
        library().map(|_| LibNft { _private: () })
    }

    /// Applies `script` as one transaction in the calling thread's network namespace; returns
    /// what nft printed (nothing, for scripts without `list`; a listing is stateless, as
    /// `nft --stateless list` prints it).
    pub fn run(&self, script: &str, what: &str) -> Result<String, Error> {
        let lib = library().map_err(|e| Error::NftFailed {
            what: what.to_owned(),
            status: format!("{LIBRARY} is not usable"),
            stderr: e.to_owned(),
        })?;
        let script = CString::new(script).map_err(|e| Error::NftFailed {
            what: what.to_owned(),
            status: "not run".to_owned(),
            stderr: format!("the script contains a NUL byte: {e}"),
        })?;
        // A refused script leaves the context as good as before: it is kept either way.
        let out = CONTEXTS.with(|| Ctx::new(lib), |ctx| Ok(ctx.run(&script, what)))?;
        // nft's parser and cache allocate and free a lot, from whichever thread runs it: give
        // the freed pages back, or they stay in the agent's resident size as fragments.
        // SAFETY: malloc_trim only releases free memory of the allocator.
        unsafe { libc::malloc_trim(0) };
        out
    }
}

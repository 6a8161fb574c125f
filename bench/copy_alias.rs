//! Why the static build's `memcpy` (src/memcopy.rs) avoids `rep movsb` for some copies: times
//! `rep movsb` against a 64-byte SSE2 block loop (the shape src/memcopy.rs uses up to 2 KiB) for
//! copies of 2,100 to 65,536 bytes, with the destination 0 to 2,048 bytes past
//! the source modulo 4 KiB, and prints the two side by side (best of five runs, ns per copy).
//! On AMD EPYC (Zen, FSRM) `rep movsb` is many times slower when the destination lies a few
//! bytes past the source modulo 4 KiB; on CPUs without that penalty the two columns stay close.
//!
//! cargo run --profile loadgen --example copy_alias

#[cfg(target_arch = "x86_64")]
fn main() {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};
    use std::hint::black_box;
    use std::time::Instant;

    /// # Safety
    /// `dst` and `src` are valid for `n` bytes and do not overlap.
    unsafe fn rep_movsb(dst: *mut u8, src: *const u8, n: usize) {
        // SAFETY: the caller's promise; `rep movsb` writes exactly n bytes at dst.
        unsafe {
            std::arch::asm!("rep movsb", inout("rdi") dst => _, inout("rsi") src => _, inout("rcx") n => _,
                options(nostack, preserves_flags));
        }
    }

    /// # Safety
    /// As for `rep_movsb`, and n >= 64.
    unsafe fn blocks(dst: *mut u8, src: *const u8, n: usize) {
        // SAFETY: every load and store is within the n bytes of src and dst.
        unsafe {
            let last: [__m128i; 4] = std::array::from_fn(|i| _mm_loadu_si128(src.add(n - 64 + 16 * i).cast()));
            let mut at = 0;
            while n - at > 64 {
                let b: [__m128i; 4] = std::array::from_fn(|i| _mm_loadu_si128(src.add(at + 16 * i).cast()));
                for (i, v) in b.iter().enumerate() {
                    _mm_storeu_si128(dst.add(at + 16 * i).cast(), *v);
                }
                at += 64;
            }
            for (i, v) in last.iter().enumerate() {
                _mm_storeu_si128(dst.add(n - 64 + 16 * i).cast(), *v);
            }
        }
    }

    const PAGE: usize = 4096;
    let mut buf = vec![1u8; 64 * PAGE];
    let base = buf.as_mut_ptr();
    let src_at = (PAGE - base as usize % PAGE) % PAGE;
    let time = |f: unsafe fn(*mut u8, *const u8, usize), dst_at: usize, n: usize| {
        let iters = (200_000_000 / n).max(1);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..iters {
                // SAFETY: both ranges lie inside `buf` and are 16 pages apart (n < 16 pages).
                unsafe { f(black_box(base.add(dst_at)), base.add(src_at), n) };
            }
            best = best.min(t.elapsed().as_nanos() as f64 / iters as f64);
        }
        best
    };
    println!("| bytes | destination past the source, mod 4 KiB | rep movsb ns | 64-byte loop ns | rep movsb ÷ loop |");
    println!("|---|---|---|---|---|");
    for n in [2100, 4096, 8192, 65_536] {
        for delta in [0, 1, 8, 16, 31, 32, 63, 64, 2048] {
            let dst_at = src_at + 16 * PAGE + delta;
            let (r, b) = (time(rep_movsb, dst_at, n), time(blocks, dst_at, n));
            println!("| {n} | {delta} | {r:.0} | {b:.0} | {:.1}× |", r / b);
        }
    }
    black_box(&mut buf);
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("copy_alias: x86-64 only");
}

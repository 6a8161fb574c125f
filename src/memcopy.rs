//! `memcpy`, `memmove` and `memcmp` for the static musl build on x86-64.
//!
//! musl's x86-64 `memcpy` is a `rep movsq` for every size, with single-byte moves before and
//! after it; the start-up of the string instruction dominates the 16-to-400-byte copies a
//! request makes (hyper moving futures and buffers into place). Under load, `perf` gave it 5.8 %
//! of the backend's samples, against 2.4 % for glibc's copy in the same code built for glibc.
//!
//! These routines have the shape of glibc's: up to 128 bytes, a few unaligned loads that
//! overlap in the middle, all of them before the first store; up to 2 KiB, a loop of 64-byte
//! blocks with the last block loaded first; above that, `rep movsb`, which CPUs with enhanced
//! string moves (ERMS: every x86-64 server CPU of the last decade) run at full bandwidth, except
//! when the destination lies 1 to 31 bytes past the source modulo 4 KiB: AMD EPYC (Zen, with
//! FSRM) then takes 12 to 22 times as long as the 64-byte loop (`bench/copy_alias.rs` prints
//! both; on one such host, 2,643 ns against 178 for 4 KiB), so those copies keep the loop at any
//! size. glibc's copy, which also turns to `rep movsb` above about 2 KiB, is as slow there. Since
//! each size class loads before it stores, the small sizes serve `memmove` as they are; a larger
//! `memmove` whose destination starts inside its source copies from the end instead.
//!
//! Everything works with SSE2 alone, which every x86-64 CPU has. On a CPU with AVX (nearly every
//! x86-64 server CPU since 2013; [`detect`] asks at start), the forward block loop moves 128
//! bytes a turn in 32-byte registers, as glibc's does, with half the instructions: the 1 to 2 KiB
//! futures that a request's server moves into place are its largest copies.
//!
//! `memcmp` too: musl's compares one byte at a time, and every request compares a few strings
//! of 8 to 30 bytes (its route, the session cache's key, the metrics' labels). callgrind counted
//! 591 instructions per `POST /message` in musl's five calls, against 99 in glibc's. This one
//! compares 16 bytes at a time (SSE2), and below 16 bytes two overlapping words, whose
//! byte-swapped values order the same way as the bytes; it never reads outside either range.
//! It is also the static build's `bcmp`, which LLVM calls for comparisons of equality.
//!
//! The routines are always assembled on x86-64 (the tests call them on every build); the static
//! musl build also names them `memcpy`, `memmove`, `memcmp` and `bcmp`, so the linker takes
//! them, and not musl's, for every call in the binary, the C allocator's included.

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".text",
    ".p2align 4",
    ".globl socketless_memmove",
    ".hidden socketless_memmove",
    ".type socketless_memmove,@function",
    "socketless_memmove:",
    ".cfi_startproc",
    "    mov rax, rdi",
    "    cmp rdx, 128",
    "    jbe .Lsl_small",
    // dst - src < n (unsigned): the destination starts inside the source, so copy from the end.
    "    mov rcx, rdi",
    "    sub rcx, rsi",
    "    cmp rcx, rdx",
    "    jb .Lsl_backward",
    "    jmp .Lsl_forward",
    ".cfi_endproc",
    ".size socketless_memmove, .-socketless_memmove",
    "",
    ".p2align 4",
    ".globl socketless_memcpy",
    ".hidden socketless_memcpy",
    ".type socketless_memcpy,@function",
    "socketless_memcpy:",
    ".cfi_startproc",
    "    mov rax, rdi",
    "    cmp rdx, 128",
    "    ja .Lsl_forward",
    // 0 to 128 bytes: every load before the first store.
    ".Lsl_small:",
    "    cmp edx, 16",
    "    jbe .Lsl_le16",
    "    cmp edx, 32",
    "    jbe .Lsl_le32",
    "    cmp edx, 64",
    "    jbe .Lsl_le64",
    "    movdqu xmm0, [rsi]",
    "    movdqu xmm1, [rsi + 16]",
    "    movdqu xmm2, [rsi + 32]",
    "    movdqu xmm3, [rsi + 48]",
    "    movdqu xmm4, [rsi + rdx - 64]",
    "    movdqu xmm5, [rsi + rdx - 48]",
    "    movdqu xmm6, [rsi + rdx - 32]",
    "    movdqu xmm7, [rsi + rdx - 16]",
    "    movdqu [rdi], xmm0",
    "    movdqu [rdi + 16], xmm1",
    "    movdqu [rdi + 32], xmm2",
    "    movdqu [rdi + 48], xmm3",
    "    movdqu [rdi + rdx - 64], xmm4",
    "    movdqu [rdi + rdx - 48], xmm5",
    "    movdqu [rdi + rdx - 32], xmm6",
    "    movdqu [rdi + rdx - 16], xmm7",
    "    ret",
    ".Lsl_le64:",
    "    movdqu xmm0, [rsi]",
    "    movdqu xmm1, [rsi + 16]",
    "    movdqu xmm2, [rsi + rdx - 32]",
    "    movdqu xmm3, [rsi + rdx - 16]",
    "    movdqu [rdi], xmm0",
    "    movdqu [rdi + 16], xmm1",
    "    movdqu [rdi + rdx - 32], xmm2",
    "    movdqu [rdi + rdx - 16], xmm3",
    "    ret",
    ".Lsl_le32:",
    "    movdqu xmm0, [rsi]",
    "    movdqu xmm1, [rsi + rdx - 16]",
    "    movdqu [rdi], xmm0",
    "    movdqu [rdi + rdx - 16], xmm1",
    "    ret",
    ".Lsl_le16:",
    "    cmp edx, 8",
    "    jb .Lsl_lt8",
    "    mov rcx, [rsi]",
    "    mov r8, [rsi + rdx - 8]",
    "    mov [rdi], rcx",
    "    mov [rdi + rdx - 8], r8",
    "    ret",
    ".Lsl_lt8:",
    "    cmp edx, 4",
    "    jb .Lsl_lt4",
    "    mov ecx, [rsi]",
    "    mov r8d, [rsi + rdx - 4]",
    "    mov [rdi], ecx",
    "    mov [rdi + rdx - 4], r8d",
    "    ret",
    ".Lsl_lt4:",
    "    test edx, edx",
    "    jz .Lsl_done",
    "    movzx ecx, byte ptr [rsi]",
    "    movzx r8d, byte ptr [rsi + rdx - 1]",
    "    cmp edx, 2",
    "    jbe .Lsl_le2",
    "    movzx r9d, byte ptr [rsi + 1]",
    "    mov [rdi + 1], r9b",
    ".Lsl_le2:",
    "    mov [rdi], cl",
    "    mov [rdi + rdx - 1], r8b",
    ".Lsl_done:",
    "    ret",
    // More than 128 bytes, front to back. The last block is loaded before the loop, and each
    // block is loaded before it is stored, so this is also a correct `memmove` whenever the
    // destination starts before the source.
    ".Lsl_forward:",
    "    cmp rdx, 2048",
    "    jbe .Lsl_blocks",
    // `rep movsb`, unless the destination lies 1 to 31 bytes past the source modulo 4 KiB: AMD's
    // fast string moves (Zen, with FSRM) then run 12 to 22 times slower than this loop.
    "    mov ecx, edi",
    "    sub ecx, esi",
    "    and ecx, 4095",
    "    dec ecx",
    "    cmp ecx, 31",
    "    jae .Lsl_rep",
    ".Lsl_blocks:",
    "    cmp byte ptr [rip + {wide}], 0",
    "    jne .Lsl_wide",
    "    movdqu xmm4, [rsi + rdx - 64]",
    "    movdqu xmm5, [rsi + rdx - 48]",
    "    movdqu xmm6, [rsi + rdx - 32]",
    "    movdqu xmm7, [rsi + rdx - 16]",
    "    lea r8, [rdi + rdx - 64]",
    "    mov rcx, rdx",
    ".Lsl_forward_loop:",
    "    movdqu xmm0, [rsi]",
    "    movdqu xmm1, [rsi + 16]",
    "    movdqu xmm2, [rsi + 32]",
    "    movdqu xmm3, [rsi + 48]",
    "    movdqu [rdi], xmm0",
    "    movdqu [rdi + 16], xmm1",
    "    movdqu [rdi + 32], xmm2",
    "    movdqu [rdi + 48], xmm3",
    "    add rsi, 64",
    "    add rdi, 64",
    "    sub rcx, 64",
    "    cmp rcx, 64",
    "    ja .Lsl_forward_loop",
    "    movdqu [r8], xmm4",
    "    movdqu [r8 + 16], xmm5",
    "    movdqu [r8 + 32], xmm6",
    "    movdqu [r8 + 48], xmm7",
    "    ret",
    // The same with AVX, 128 bytes a turn (more than 128 bytes to copy, so the last 128 are
    // inside the range): the last block loaded first, each block loaded before it is stored.
    ".Lsl_wide:",
    "    vmovdqu ymm4, [rsi + rdx - 128]",
    "    vmovdqu ymm5, [rsi + rdx - 96]",
    "    vmovdqu ymm6, [rsi + rdx - 64]",
    "    vmovdqu ymm7, [rsi + rdx - 32]",
    "    lea r8, [rdi + rdx - 128]",
    "    mov rcx, rdx",
    ".Lsl_wide_loop:",
    "    vmovdqu ymm0, [rsi]",
    "    vmovdqu ymm1, [rsi + 32]",
    "    vmovdqu ymm2, [rsi + 64]",
    "    vmovdqu ymm3, [rsi + 96]",
    "    vmovdqu [rdi], ymm0",
    "    vmovdqu [rdi + 32], ymm1",
    "    vmovdqu [rdi + 64], ymm2",
    "    vmovdqu [rdi + 96], ymm3",
    "    add rsi, 128",
    "    add rdi, 128",
    "    sub rcx, 128",
    "    cmp rcx, 128",
    "    ja .Lsl_wide_loop",
    "    vmovdqu [r8], ymm4",
    "    vmovdqu [r8 + 32], ymm5",
    "    vmovdqu [r8 + 64], ymm6",
    "    vmovdqu [r8 + 96], ymm7",
    // Leaves no upper halves set, which would slow the SSE code that follows.
    "    vzeroupper",
    "    ret",
    // A forward `rep movsb` is byte-exact when the destination starts before the source.
    ".Lsl_rep:",
    "    mov rcx, rdx",
    "    rep movsb",
    "    ret",
    // More than 128 bytes, back to front (the destination starts inside the source): the
    // mirror of the forward loop, with the first block loaded before the loop.
    ".Lsl_backward:",
    "    movdqu xmm4, [rsi]",
    "    movdqu xmm5, [rsi + 16]",
    "    movdqu xmm6, [rsi + 32]",
    "    movdqu xmm7, [rsi + 48]",
    "    mov r8, rdi",
    "    add rsi, rdx",
    "    add rdi, rdx",
    "    mov rcx, rdx",
    ".Lsl_backward_loop:",
    "    sub rsi, 64",
    "    sub rdi, 64",
    "    movdqu xmm0, [rsi]",
    "    movdqu xmm1, [rsi + 16]",
    "    movdqu xmm2, [rsi + 32]",
    "    movdqu xmm3, [rsi + 48]",
    "    movdqu [rdi], xmm0",
    "    movdqu [rdi + 16], xmm1",
    "    movdqu [rdi + 32], xmm2",
    "    movdqu [rdi + 48], xmm3",
    "    sub rcx, 64",
    "    cmp rcx, 64",
    "    ja .Lsl_backward_loop",
    "    movdqu [r8], xmm4",
    "    movdqu [r8 + 16], xmm5",
    "    movdqu [r8 + 32], xmm6",
    "    movdqu [r8 + 48], xmm7",
    "    ret",
    ".cfi_endproc",
    ".size socketless_memcpy, .-socketless_memcpy",
    wide = sym WIDE,
);

/// Whether `memcpy` and `memmove` may use AVX for their block loop; see [`detect`].
#[cfg(target_arch = "x86_64")]
static WIDE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lets the copies use AVX when the CPU has it and the OS saves its registers (asked once, at
/// start). Until then, and on a CPU without it, they use SSE2 alone.
pub fn detect() {
    #[cfg(target_arch = "x86_64")]
    WIDE.store(
        std::arch::is_x86_feature_detected!("avx"),
        std::sync::atomic::Ordering::Relaxed,
    );
}

// memcmp(a, b, n): the sign of the first byte that differs, as unsigned bytes; 0 if none does.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".text",
    ".p2align 4",
    ".globl socketless_memcmp",
    ".hidden socketless_memcmp",
    ".type socketless_memcmp,@function",
    "socketless_memcmp:",
    ".cfi_startproc",
    "    cmp rdx, 16",
    "    jb .Lsc_lt16",
    // 16 bytes and more: blocks of 16 from the start, then the last 16 (which may overlap the
    // block before, whose bytes were equal, so the first difference found is still the first).
    "    lea r8, [rdx - 16]",
    "    xor ecx, ecx",
    ".Lsc_loop:",
    "    movdqu xmm0, [rdi + rcx]",
    "    movdqu xmm1, [rsi + rcx]",
    "    pcmpeqb xmm0, xmm1",
    "    pmovmskb eax, xmm0",
    "    xor eax, 0xffff",
    "    jnz .Lsc_diff",
    // Equal so far (eax is 0); the block at r8 is the last.
    "    cmp rcx, r8",
    "    jae .Lsc_done",
    "    add rcx, 16",
    "    cmp rcx, r8",
    "    jbe .Lsc_loop",
    "    mov rcx, r8",
    "    jmp .Lsc_loop",
    // eax has a bit for each differing byte of the block at rcx: the lowest is the first.
    ".Lsc_diff:",
    "    bsf eax, eax",
    "    add rcx, rax",
    "    movzx eax, byte ptr [rdi + rcx]",
    "    movzx edx, byte ptr [rsi + rcx]",
    "    sub eax, edx",
    "    ret",
    // 8 to 15 bytes: the first 8, then the last 8. Byte-swapped, a word compares as its bytes do.
    ".Lsc_lt16:",
    "    cmp edx, 8",
    "    jb .Lsc_lt8",
    "    mov rax, [rdi]",
    "    mov rcx, [rsi]",
    "    cmp rax, rcx",
    "    jne .Lsc_qword",
    "    mov rax, [rdi + rdx - 8]",
    "    mov rcx, [rsi + rdx - 8]",
    "    cmp rax, rcx",
    "    jne .Lsc_qword",
    "    xor eax, eax",
    "    ret",
    ".Lsc_qword:",
    "    bswap rax",
    "    bswap rcx",
    "    cmp rax, rcx",
    // -1 if below, else 1.
    "    sbb eax, eax",
    "    or eax, 1",
    "    ret",
    // 4 to 7 bytes: the same with 4-byte words.
    ".Lsc_lt8:",
    "    cmp edx, 4",
    "    jb .Lsc_lt4",
    "    mov eax, [rdi]",
    "    mov ecx, [rsi]",
    "    cmp eax, ecx",
    "    jne .Lsc_dword",
    "    mov eax, [rdi + rdx - 4]",
    "    mov ecx, [rsi + rdx - 4]",
    "    cmp eax, ecx",
    "    jne .Lsc_dword",
    "    xor eax, eax",
    "    ret",
    ".Lsc_dword:",
    "    bswap eax",
    "    bswap ecx",
    "    cmp eax, ecx",
    "    sbb eax, eax",
    "    or eax, 1",
    "    ret",
    // 0 to 3 bytes, one at a time.
    ".Lsc_lt4:",
    "    xor ecx, ecx",
    "    xor eax, eax",
    ".Lsc_bytes:",
    "    cmp rcx, rdx",
    "    jae .Lsc_done",
    "    movzx eax, byte ptr [rdi + rcx]",
    "    movzx r8d, byte ptr [rsi + rcx]",
    "    inc rcx",
    "    sub eax, r8d",
    "    jz .Lsc_bytes",
    ".Lsc_done:",
    "    ret",
    ".cfi_endproc",
    ".size socketless_memcmp, .-socketless_memcmp",
);

// The static build's `memcpy`, `memmove`, `memcmp` and `bcmp`. musl's `memmove` jumps into its
// `memcpy`, and its `bcmp` calls its `memcmp`, so each pair is replaced or neither is: the
// linker takes a C library member only for a name still undefined, and with both names defined
// here neither of musl's two is linked.
#[cfg(all(target_arch = "x86_64", target_env = "musl"))]
core::arch::global_asm!(
    ".globl memcpy",
    ".type memcpy,@function",
    ".set memcpy, socketless_memcpy",
    ".globl memmove",
    ".type memmove,@function",
    ".set memmove, socketless_memmove",
    ".globl memcmp",
    ".type memcmp,@function",
    ".set memcmp, socketless_memcmp",
    ".globl bcmp",
    ".type bcmp,@function",
    ".set bcmp, socketless_memcmp",
);

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    unsafe extern "C" {
        fn socketless_memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
        fn socketless_memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
        fn socketless_memcmp(a: *const u8, b: *const u8, n: usize) -> i32;
    }

    /// Bytes that differ at every position within a block, so a misplaced copy shows.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed ^ (i >> 8) as u8))
            .collect()
    }

    /// Every size up to 600, then sizes around each size class's edges up to past the
    /// `rep movsb` threshold.
    fn sizes() -> Vec<usize> {
        let mut sizes: Vec<usize> = (0..=600).collect();
        for edge in [1024, 2048, 4096, 65_536] {
            sizes.extend(edge - 65..=edge + 65);
        }
        sizes
    }

    /// Runs `check` with the copies' block loop on SSE2, then on AVX where the CPU has it.
    /// Only these tests switch it, one at a time; the copies are exact on either path, so a
    /// copy elsewhere that sees the switch mid-way is still right.
    fn on_both_paths(check: impl Fn()) {
        use std::sync::atomic::Ordering;
        static SWITCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _alone = SWITCHING.lock().unwrap_or_else(|p| p.into_inner());
        super::WIDE.store(false, Ordering::Relaxed);
        check();
        if std::arch::is_x86_feature_detected!("avx") {
            super::WIDE.store(true, Ordering::Relaxed);
            check();
            super::WIDE.store(false, Ordering::Relaxed);
        } else {
            eprintln!("this CPU has no AVX: the copies' AVX loop was not run");
        }
    }

    #[test]
    fn memcpy_copies_every_size_and_alignment_and_nothing_around_it() {
        on_both_paths(|| {
            const GUARD: usize = 64;
            for n in sizes() {
                for (src_off, dst_off) in [(0, 0), (1, 0), (0, 3), (7, 13), (15, 1), (8, 8)] {
                    let src = pattern(n + src_off + GUARD, n as u8);
                    let mut dst = vec![0xA5u8; GUARD + dst_off + n + GUARD];
                    let at = GUARD + dst_off;
                    // SAFETY: both ranges are in bounds of their own vectors, which do not overlap.
                    let ret = unsafe { socketless_memcpy(dst.as_mut_ptr().add(at), src.as_ptr().add(src_off), n) };
                    assert_eq!(ret, dst.as_mut_ptr().wrapping_add(at), "n={n}: returns the destination");
                    assert_eq!(
                        &dst[at..at + n],
                        &src[src_off..src_off + n],
                        "n={n} src+{src_off} dst+{dst_off}"
                    );
                    assert!(
                        dst[..at].iter().all(|&b| b == 0xA5),
                        "n={n}: wrote before the destination"
                    );
                    assert!(
                        dst[at + n..].iter().all(|&b| b == 0xA5),
                        "n={n}: wrote past the destination"
                    );
                }
            }
        });
    }

    /// Above 2 KiB, a destination 1 to 31 bytes past the source modulo 4 KiB takes the block
    /// loop instead of `rep movsb`: copies and forward moves at every such distance, each side of
    /// its edges, and far from the source or overlapping it.
    #[test]
    fn large_copies_a_few_bytes_past_the_source_modulo_a_page_are_exact() {
        on_both_paths(|| {
            const PAGE: usize = 4096;
            for n in [2049, 2111, 3000, 4096, 8192 + 17, 20_000] {
                for delta in (0..=65).chain([PAGE - 1, PAGE - 63, PAGE - 64]) {
                    // A copy: the destination eight pages past the source, plus `delta`.
                    let src = pattern(n, delta as u8);
                    let mut buf = vec![0xA5u8; 64 + 2 * PAGE + 8 * PAGE + delta + n + 64];
                    let base = buf.as_mut_ptr() as usize;
                    // Places the source's copy so that the destination is `delta` past it modulo a page.
                    let src_at = 64 + (PAGE - base % PAGE) % PAGE;
                    let dst_at = src_at + 8 * PAGE + delta;
                    buf[src_at..src_at + n].copy_from_slice(&src);
                    let p = buf.as_mut_ptr();
                    // SAFETY: both ranges lie inside `buf` and do not overlap (8 pages apart, n < 8 pages).
                    unsafe { socketless_memcpy(p.add(dst_at), p.add(src_at), n) };
                    assert!(buf[dst_at..dst_at + n] == src[..], "n={n} delta={delta}");
                    assert!(
                        buf[dst_at + n..].iter().all(|&b| b == 0xA5),
                        "n={n} delta={delta}: wrote past"
                    );
                    // A forward move: the destination a page less `delta` before the source (the
                    // same distance modulo a page), overlapping it when n is over that.
                    let original = pattern(n + 2 * PAGE + 128, delta as u8 ^ 0x5A);
                    let (src_at, dst_at) = (64 + PAGE, 64 + delta);
                    let mut buf = original.clone();
                    let mut expected = original.clone();
                    expected.copy_within(src_at..src_at + n, dst_at);
                    let p = buf.as_mut_ptr();
                    // SAFETY: both ranges lie inside `buf`; memmove allows them to overlap.
                    unsafe { socketless_memmove(p.add(dst_at), p.add(src_at), n) };
                    assert!(buf == expected, "memmove n={n} delta={delta}");
                }
            }
        });
    }

    #[test]
    fn memmove_copies_overlapping_ranges_both_ways() {
        on_both_paths(|| {
            let shifts = [
                1usize, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 1000,
            ];
            for n in sizes() {
                for &shift in &shifts {
                    let original = pattern(n + shift + 2 * 64, n as u8 ^ shift as u8);
                    for forward in [true, false] {
                        let (src_at, dst_at) = if forward { (64 + shift, 64) } else { (64, 64 + shift) };
                        let mut buf = original.clone();
                        let mut expected = original.clone();
                        expected.copy_within(src_at..src_at + n, dst_at);
                        let base = buf.as_mut_ptr();
                        // SAFETY: both ranges lie inside `buf`; memmove allows them to overlap.
                        let ret = unsafe { socketless_memmove(base.add(dst_at), base.add(src_at), n) };
                        assert_eq!(ret, base.wrapping_add(dst_at), "n={n}: returns the destination");
                        assert!(buf == expected, "n={n} shift={shift} forward={forward}");
                    }
                }
                // A move onto itself leaves the bytes as they were.
                let mut buf = pattern(n, 9);
                let expected = buf.clone();
                let p = buf.as_mut_ptr();
                // SAFETY: source and destination are the same in-bounds range.
                unsafe { socketless_memmove(p, p, n) };
                assert!(buf == expected, "n={n} onto itself");
            }
        });
    }

    /// The order of the first byte that differs, by hand: not through a slice comparison,
    /// which may itself call `memcmp`.
    fn reference(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
        for (x, y) in a.iter().zip(b) {
            if x != y {
                return x.cmp(y);
            }
        }
        std::cmp::Ordering::Equal
    }

    fn memcmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
        assert_eq!(a.len(), b.len());
        // SAFETY: both ranges are in bounds of their slices.
        unsafe { socketless_memcmp(a.as_ptr(), b.as_ptr(), a.len()) }.cmp(&0)
    }

    /// Every size up to 600 and around the edges, at several alignments: equal ranges, and a
    /// difference at each position (every one up to 80 bytes, then each block's edges and a
    /// spread), each way, with bytes that differ in their high bit too (compared unsigned), and
    /// a later difference the other way that must not change the answer.
    #[test]
    fn memcmp_orders_by_the_first_differing_byte_at_every_size_and_alignment() {
        // The sizes of the copies' tests, but only the two largest past 4 KiB: nothing changes
        // with size above the first few blocks.
        let sizes = sizes()
            .into_iter()
            .filter(|&n| n <= 4096 + 65)
            .chain([65_536, 65_537 + 15]);
        for n in sizes {
            for (a_off, b_off) in [(0, 0), (1, 0), (0, 3), (7, 13), (15, 1)] {
                let base = pattern(n, n as u8 ^ 0x3C);
                let mut a = vec![0u8; a_off + n];
                let mut b = vec![0u8; b_off + n];
                a[a_off..].copy_from_slice(&base);
                b[b_off..].copy_from_slice(&base);
                assert_eq!(
                    memcmp(&a[a_off..], &b[b_off..]),
                    std::cmp::Ordering::Equal,
                    "n={n} equal"
                );
                let positions: Vec<usize> = if n <= 80 {
                    (0..n).collect()
                } else {
                    [
                        0,
                        1,
                        7,
                        8,
                        15,
                        16,
                        17,
                        31,
                        32,
                        33,
                        n / 3,
                        n / 2,
                        n - 17,
                        n - 16,
                        n - 15,
                        n - 8,
                        n - 1,
                    ]
                    .to_vec()
                };
                for at in positions {
                    for delta in [1u8, 0x80, 0xFF] {
                        let (a_was, b_was) = (a[a_off + n - 1], b[b_off + at]);
                        b[b_off + at] = b_was.wrapping_add(delta);
                        if at + 1 < n {
                            a[a_off + n - 1] = a_was.wrapping_add(0x41);
                        }
                        let (x, y) = (&a[a_off..], &b[b_off..]);
                        assert_eq!(memcmp(x, y), reference(x, y), "n={n} at={at} delta={delta:#x}");
                        assert_eq!(memcmp(y, x), reference(y, x), "n={n} at={at} delta={delta:#x}, swapped");
                        assert_ne!(memcmp(x, y), std::cmp::Ordering::Equal, "n={n} at={at}");
                        a[a_off + n - 1] = a_was;
                        b[b_off + at] = b_was;
                    }
                }
            }
        }
    }
}

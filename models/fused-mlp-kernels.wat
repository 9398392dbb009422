;; WASM SIMD kernels of the fused dense trainer (models/fused-mlp.ts), for layers whose width n
;; is a multiple of 4: f32x4 lanes over the output units. Same loop order as the JavaScript
;; kernels (i-k-j; a layer's backward pass in one sweep) but no zero skipping: a branch on each
;; input (ReLU's zeros fall at random) mispredicted so often that the forward pass of 1024
;; distinct rows ran 2-3x slower than without it. Adding 0 * w changes no sum. Pointers are byte
;; offsets into the imported memory. Rebuild the embedded binary (models/fused-mlp-wasm.ts) with
;;   node bin/run-ts.js models/fused-mlp-wasm-build.ts
(module
  (import "env" "memory" (memory 1))

  ;; z[i, :] = b + sum_c a[i, c] w[c, :] for each of `rows` rows (a: rows x k, w: k x n), then
  ;; ReLU in place when $relu (pmax(0, z): 0 for z <= 0 and for NaN, as the JavaScript kernel).
  (func (export "fwd") (param $a i32) (param $w i32) (param $b i32) (param $z i32) (param $rows i32) (param $k i32) (param $n i32) (param $relu i32)
    (local $nb i32) (local $kb i32) (local $zend i32) (local $aend i32) (local $wp i32) (local $j i32) (local $v f32) (local $vv v128)
    (local.set $nb (i32.shl (local.get $n) (i32.const 2)))
    (local.set $kb (i32.shl (local.get $k) (i32.const 2)))
    (local.set $zend (i32.add (local.get $z) (i32.mul (local.get $rows) (local.get $nb))))
    (block $rows_done
      (loop $rows_loop
        (br_if $rows_done (i32.ge_u (local.get $z) (local.get $zend)))
        (local.set $j (i32.const 0))
        (block $bias_done
          (loop $bias_loop
            (br_if $bias_done (i32.ge_u (local.get $j) (local.get $nb)))
            (v128.store (i32.add (local.get $z) (local.get $j)) (v128.load (i32.add (local.get $b) (local.get $j))))
            (local.set $j (i32.add (local.get $j) (i32.const 16)))
            (br $bias_loop)))
        (local.set $aend (i32.add (local.get $a) (local.get $kb)))
        (local.set $wp (local.get $w))
        (block $k_done
          (loop $k_loop
            (br_if $k_done (i32.ge_u (local.get $a) (local.get $aend)))
            (local.set $vv (v128.load32_splat (local.get $a)))
            (local.set $j (i32.const 0))
            (block $j_done
              (loop $j_loop
                (br_if $j_done (i32.ge_u (local.get $j) (local.get $nb)))
                (v128.store (i32.add (local.get $z) (local.get $j))
                  (f32x4.add
                    (v128.load (i32.add (local.get $z) (local.get $j)))
                    (f32x4.mul (local.get $vv) (v128.load (i32.add (local.get $wp) (local.get $j))))))
                (local.set $j (i32.add (local.get $j) (i32.const 16)))
                (br $j_loop)))
            (local.set $a (i32.add (local.get $a) (i32.const 4)))
            (local.set $wp (i32.add (local.get $wp) (local.get $nb)))
            (br $k_loop)))
        (if (local.get $relu)
          (then
            (local.set $j (i32.const 0))
            (block $r_done
              (loop $r_loop
                (br_if $r_done (i32.ge_u (local.get $j) (local.get $nb)))
                (v128.store (i32.add (local.get $z) (local.get $j))
                  (f32x4.pmax (v128.const f32x4 0 0 0 0) (v128.load (i32.add (local.get $z) (local.get $j)))))
                (local.set $j (i32.add (local.get $j) (i32.const 16)))
                (br $r_loop)))))
        (local.set $z (i32.add (local.get $z) (local.get $nb)))
        (br $rows_loop)))
  )

  ;; The kernel and bias gradients of a layer (n a multiple of 4): gw[c, :] += sum_i a[i, c] dz[i, :],
  ;; gb += sum_i dz[i, :]. Loop order c, j, i: each 4-unit slice of gw stays in a register while
  ;; the rows go by (rows are added in order, as the i-k-j loop did), instead of a load and a
  ;; store of gw per 4 multiply-adds.
  (func (export "bwdw") (param $a i32) (param $dz i32) (param $gw i32) (param $gb i32) (param $rows i32) (param $k i32) (param $n i32)
    (local $nb i32) (local $kb i32) (local $c i32) (local $j i32) (local $ap i32) (local $dp i32) (local $i i32) (local $acc v128)
    (local.set $nb (i32.shl (local.get $n) (i32.const 2)))
    (local.set $kb (i32.shl (local.get $k) (i32.const 2)))
    ;; bias
    (local.set $j (i32.const 0))
    (block $b_done
      (loop $b_loop
        (br_if $b_done (i32.ge_u (local.get $j) (local.get $nb)))
        (local.set $acc (v128.load (i32.add (local.get $gb) (local.get $j))))
        (local.set $dp (i32.add (local.get $dz) (local.get $j)))
        (local.set $i (i32.const 0))
        (block $bi_done
          (loop $bi_loop
            (br_if $bi_done (i32.ge_u (local.get $i) (local.get $rows)))
            (local.set $acc (f32x4.add (local.get $acc) (v128.load (local.get $dp))))
            (local.set $dp (i32.add (local.get $dp) (local.get $nb)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $bi_loop)))
        (v128.store (i32.add (local.get $gb) (local.get $j)) (local.get $acc))
        (local.set $j (i32.add (local.get $j) (i32.const 16)))
        (br $b_loop)))
    ;; kernel
    (local.set $c (i32.const 0))
    (block $c_done
      (loop $c_loop
        (br_if $c_done (i32.ge_u (local.get $c) (local.get $kb)))
        (local.set $j (i32.const 0))
        (block $j_done
          (loop $j_loop
            (br_if $j_done (i32.ge_u (local.get $j) (local.get $nb)))
            (local.set $acc (v128.load (local.get $gw)))
            (local.set $ap (i32.add (local.get $a) (local.get $c)))
            (local.set $dp (i32.add (local.get $dz) (local.get $j)))
            (local.set $i (i32.const 0))
            (block $i_done
              (loop $i_loop
                (br_if $i_done (i32.ge_u (local.get $i) (local.get $rows)))
                (local.set $acc (f32x4.add (local.get $acc) (f32x4.mul (v128.load32_splat (local.get $ap)) (v128.load (local.get $dp)))))
                (local.set $ap (i32.add (local.get $ap) (local.get $kb)))
                (local.set $dp (i32.add (local.get $dp) (local.get $nb)))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $i_loop)))
            (v128.store (local.get $gw) (local.get $acc))
            (local.set $gw (i32.add (local.get $gw) (i32.const 16)))
            (local.set $j (i32.add (local.get $j) (i32.const 16)))
            (br $j_loop)))
        (local.set $c (i32.add (local.get $c) (i32.const 4)))
        (br $c_loop)))
  )

  ;; bwdw's kernel part for n a multiple of 16: 16 units at a time in 4 independent accumulators
  ;; (one accumulator is a chain of dependent adds, bound by the add's latency). Same sums.
  (func (export "bwdw16") (param $a i32) (param $dz i32) (param $gw i32) (param $rows i32) (param $k i32) (param $n i32)
    (local $nb i32) (local $kb i32) (local $c i32) (local $j i32) (local $ap i32) (local $dp i32) (local $i i32) (local $vv v128)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128)
    (local.set $nb (i32.shl (local.get $n) (i32.const 2)))
    (local.set $kb (i32.shl (local.get $k) (i32.const 2)))
    (local.set $c (i32.const 0))
    (block $c_done
      (loop $c_loop
        (br_if $c_done (i32.ge_u (local.get $c) (local.get $kb)))
        (local.set $j (i32.const 0))
        (block $j_done
          (loop $j_loop
            (br_if $j_done (i32.ge_u (local.get $j) (local.get $nb)))
            (local.set $s0 (v128.load offset=0 (local.get $gw)))
            (local.set $s1 (v128.load offset=16 (local.get $gw)))
            (local.set $s2 (v128.load offset=32 (local.get $gw)))
            (local.set $s3 (v128.load offset=48 (local.get $gw)))
            (local.set $ap (i32.add (local.get $a) (local.get $c)))
            (local.set $dp (i32.add (local.get $dz) (local.get $j)))
            (local.set $i (i32.const 0))
            (block $i_done
              (loop $i_loop
                (br_if $i_done (i32.ge_u (local.get $i) (local.get $rows)))
                (local.set $vv (v128.load32_splat (local.get $ap)))
                (local.set $s0 (f32x4.add (local.get $s0) (f32x4.mul (local.get $vv) (v128.load offset=0 (local.get $dp)))))
                (local.set $s1 (f32x4.add (local.get $s1) (f32x4.mul (local.get $vv) (v128.load offset=16 (local.get $dp)))))
                (local.set $s2 (f32x4.add (local.get $s2) (f32x4.mul (local.get $vv) (v128.load offset=32 (local.get $dp)))))
                (local.set $s3 (f32x4.add (local.get $s3) (f32x4.mul (local.get $vv) (v128.load offset=48 (local.get $dp)))))
                (local.set $ap (i32.add (local.get $ap) (local.get $kb)))
                (local.set $dp (i32.add (local.get $dp) (local.get $nb)))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $i_loop)))
            (v128.store offset=0 (local.get $gw) (local.get $s0))
            (v128.store offset=16 (local.get $gw) (local.get $s1))
            (v128.store offset=32 (local.get $gw) (local.get $s2))
            (v128.store offset=48 (local.get $gw) (local.get $s3))
            (local.set $gw (i32.add (local.get $gw) (i32.const 64)))
            (local.set $j (i32.add (local.get $j) (i32.const 64)))
            (br $j_loop)))
        (local.set $c (i32.add (local.get $c) (i32.const 4)))
        (br $c_loop)))
  )

  ;; The gradient into the layer below (n a multiple of 4): below[i, c] = f'(a[i, c]) sum_j dz[i, j] w[c, j],
  ;; a being the activated output of the layer below; act 1 = linear, 2 = ReLU, 3 = tanh.
  (func (export "bwda") (param $a i32) (param $dz i32) (param $w i32) (param $below i32) (param $rows i32) (param $k i32) (param $n i32) (param $act i32)
    (local $nb i32) (local $aend i32) (local $wp i32) (local $j i32) (local $dzend i32) (local $s4 v128) (local $s f32) (local $v f32)
    (local.set $nb (i32.shl (local.get $n) (i32.const 2)))
    (local.set $dzend (i32.add (local.get $dz) (i32.mul (local.get $rows) (local.get $nb))))
    (block $rows_done
      (loop $rows_loop
        (br_if $rows_done (i32.ge_u (local.get $dz) (local.get $dzend)))
        (local.set $aend (i32.add (local.get $a) (i32.shl (local.get $k) (i32.const 2))))
        (local.set $wp (local.get $w))
        (block $k_done
          (loop $k_loop
            (br_if $k_done (i32.ge_u (local.get $a) (local.get $aend)))
            (local.set $s4 (v128.const f32x4 0 0 0 0))
            (local.set $j (i32.const 0))
            (block $j_done
              (loop $j_loop
                (br_if $j_done (i32.ge_u (local.get $j) (local.get $nb)))
                (local.set $s4 (f32x4.add (local.get $s4)
                  (f32x4.mul (v128.load (i32.add (local.get $dz) (local.get $j))) (v128.load (i32.add (local.get $wp) (local.get $j))))))
                (local.set $j (i32.add (local.get $j) (i32.const 16)))
                (br $j_loop)))
            (local.set $s
              (f32.add
                (f32.add (f32x4.extract_lane 0 (local.get $s4)) (f32x4.extract_lane 1 (local.get $s4)))
                (f32.add (f32x4.extract_lane 2 (local.get $s4)) (f32x4.extract_lane 3 (local.get $s4)))))
            (local.set $v (f32.load (local.get $a)))
            (if (i32.eq (local.get $act) (i32.const 2))
              (then (local.set $s (select (local.get $s) (f32.const 0) (f32.gt (local.get $v) (f32.const 0))))))
            (if (i32.eq (local.get $act) (i32.const 3))
              (then (local.set $s (f32.mul (local.get $s) (f32.sub (f32.const 1) (f32.mul (local.get $v) (local.get $v)))))))
            (f32.store (local.get $below) (local.get $s))
            (local.set $below (i32.add (local.get $below) (i32.const 4)))
            (local.set $a (i32.add (local.get $a) (i32.const 4)))
            (local.set $wp (i32.add (local.get $wp) (local.get $nb)))
            (br $k_loop)))
        (local.set $dz (i32.add (local.get $dz) (local.get $nb)))
        (br $rows_loop)))
  )

  ;; bwda for k and n multiples of 4: 4 inputs c at a time, 4 independent dot products over the
  ;; units (a single one is a chain of dependent adds), the activation's derivative on 4 lanes.
  ;; Same sums as bwda.
  (func (export "bwda4") (param $a i32) (param $dz i32) (param $w i32) (param $below i32) (param $rows i32) (param $k i32) (param $n i32) (param $act i32)
    (local $nb i32) (local $aend i32) (local $wp i32) (local $j i32) (local $dzend i32) (local $d v128)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128) (local $h v128) (local $a4 v128)
    (local.set $nb (i32.shl (local.get $n) (i32.const 2)))
    (local.set $dzend (i32.add (local.get $dz) (i32.mul (local.get $rows) (local.get $nb))))
    (block $rows_done
      (loop $rows_loop
        (br_if $rows_done (i32.ge_u (local.get $dz) (local.get $dzend)))
        (local.set $aend (i32.add (local.get $a) (i32.shl (local.get $k) (i32.const 2))))
        (local.set $wp (local.get $w))
        (block $k_done
          (loop $k_loop
            (br_if $k_done (i32.ge_u (local.get $a) (local.get $aend)))
            (local.set $s0 (v128.const f32x4 0 0 0 0))
            (local.set $s1 (v128.const f32x4 0 0 0 0))
            (local.set $s2 (v128.const f32x4 0 0 0 0))
            (local.set $s3 (v128.const f32x4 0 0 0 0))
            (local.set $j (i32.const 0))
            (block $j_done
              (loop $j_loop
                (br_if $j_done (i32.ge_u (local.get $j) (local.get $nb)))
                (local.set $d (v128.load (i32.add (local.get $dz) (local.get $j))))
                (local.set $s0 (f32x4.add (local.get $s0) (f32x4.mul (local.get $d) (v128.load (i32.add (local.get $wp) (local.get $j))))))
                (local.set $s1 (f32x4.add (local.get $s1) (f32x4.mul (local.get $d)
                  (v128.load (i32.add (i32.add (local.get $wp) (local.get $nb)) (local.get $j))))))
                (local.set $s2 (f32x4.add (local.get $s2) (f32x4.mul (local.get $d)
                  (v128.load (i32.add (i32.add (local.get $wp) (i32.shl (local.get $nb) (i32.const 1))) (local.get $j))))))
                (local.set $s3 (f32x4.add (local.get $s3) (f32x4.mul (local.get $d)
                  (v128.load (i32.add (i32.add (local.get $wp) (i32.mul (local.get $nb) (i32.const 3))) (local.get $j))))))
                (local.set $j (i32.add (local.get $j) (i32.const 16)))
                (br $j_loop)))
            (local.set $h (f32x4.splat
              (f32.add
                (f32.add (f32x4.extract_lane 0 (local.get $s0)) (f32x4.extract_lane 1 (local.get $s0)))
                (f32.add (f32x4.extract_lane 2 (local.get $s0)) (f32x4.extract_lane 3 (local.get $s0))))))
            (local.set $h (f32x4.replace_lane 1 (local.get $h)
              (f32.add
                (f32.add (f32x4.extract_lane 0 (local.get $s1)) (f32x4.extract_lane 1 (local.get $s1)))
                (f32.add (f32x4.extract_lane 2 (local.get $s1)) (f32x4.extract_lane 3 (local.get $s1))))))
            (local.set $h (f32x4.replace_lane 2 (local.get $h)
              (f32.add
                (f32.add (f32x4.extract_lane 0 (local.get $s2)) (f32x4.extract_lane 1 (local.get $s2)))
                (f32.add (f32x4.extract_lane 2 (local.get $s2)) (f32x4.extract_lane 3 (local.get $s2))))))
            (local.set $h (f32x4.replace_lane 3 (local.get $h)
              (f32.add
                (f32.add (f32x4.extract_lane 0 (local.get $s3)) (f32x4.extract_lane 1 (local.get $s3)))
                (f32.add (f32x4.extract_lane 2 (local.get $s3)) (f32x4.extract_lane 3 (local.get $s3))))))
            (local.set $a4 (v128.load (local.get $a)))
            (if (i32.eq (local.get $act) (i32.const 2))
              (then (local.set $h (v128.and (local.get $h) (f32x4.gt (local.get $a4) (v128.const f32x4 0 0 0 0))))))
            (if (i32.eq (local.get $act) (i32.const 3))
              (then (local.set $h (f32x4.mul (local.get $h) (f32x4.sub (v128.const f32x4 1 1 1 1) (f32x4.mul (local.get $a4) (local.get $a4)))))))
            (v128.store (local.get $below) (local.get $h))
            (local.set $below (i32.add (local.get $below) (i32.const 16)))
            (local.set $a (i32.add (local.get $a) (i32.const 16)))
            (local.set $wp (i32.add (local.get $wp) (i32.shl (local.get $nb) (i32.const 2))))
            (br $k_loop)))
        (local.set $dz (i32.add (local.get $dz) (local.get $nb)))
        (br $rows_loop)))
  )

  ;; fwd for n a multiple of 16, register-blocked: 16 units at a time held in 4 f32x4
  ;; accumulators while the inputs go by (one load of w per 4 multiply-adds instead of a load and a
  ;; store of z too). Same order of additions as fwd, so the same numbers.
  (func (export "fwd16") (param $a i32) (param $w i32) (param $b i32) (param $z i32) (param $rows i32) (param $k i32) (param $n i32) (param $relu i32)
    (local $nb i32) (local $kb i32) (local $zend i32) (local $j i32) (local $ap i32) (local $aend i32) (local $wp i32) (local $v f32) (local $vv v128)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128)
    (local.set $nb (i32.shl (local.get $n) (i32.const 2)))
    (local.set $kb (i32.shl (local.get $k) (i32.const 2)))
    (local.set $zend (i32.add (local.get $z) (i32.mul (local.get $rows) (local.get $nb))))
    (block $rows_done
      (loop $rows_loop
        (br_if $rows_done (i32.ge_u (local.get $z) (local.get $zend)))
        (local.set $aend (i32.add (local.get $a) (local.get $kb)))
        (local.set $j (i32.const 0))
        (block $j_done
          (loop $j_loop
            (br_if $j_done (i32.ge_u (local.get $j) (local.get $nb)))
            (local.set $s0 (v128.load offset=0 (i32.add (local.get $b) (local.get $j))))
            (local.set $s1 (v128.load offset=16 (i32.add (local.get $b) (local.get $j))))
            (local.set $s2 (v128.load offset=32 (i32.add (local.get $b) (local.get $j))))
            (local.set $s3 (v128.load offset=48 (i32.add (local.get $b) (local.get $j))))
            (local.set $ap (local.get $a))
            (local.set $wp (i32.add (local.get $w) (local.get $j)))
            (block $k_done
              (loop $k_loop
                (br_if $k_done (i32.ge_u (local.get $ap) (local.get $aend)))
                (local.set $vv (v128.load32_splat (local.get $ap)))
                (local.set $s0 (f32x4.add (local.get $s0) (f32x4.mul (local.get $vv) (v128.load offset=0 (local.get $wp)))))
                (local.set $s1 (f32x4.add (local.get $s1) (f32x4.mul (local.get $vv) (v128.load offset=16 (local.get $wp)))))
                (local.set $s2 (f32x4.add (local.get $s2) (f32x4.mul (local.get $vv) (v128.load offset=32 (local.get $wp)))))
                (local.set $s3 (f32x4.add (local.get $s3) (f32x4.mul (local.get $vv) (v128.load offset=48 (local.get $wp)))))
                (local.set $ap (i32.add (local.get $ap) (i32.const 4)))
                (local.set $wp (i32.add (local.get $wp) (local.get $nb)))
                (br $k_loop)))
            (if (local.get $relu)
              (then
                (local.set $s0 (f32x4.pmax (v128.const f32x4 0 0 0 0) (local.get $s0)))
                (local.set $s1 (f32x4.pmax (v128.const f32x4 0 0 0 0) (local.get $s1)))
                (local.set $s2 (f32x4.pmax (v128.const f32x4 0 0 0 0) (local.get $s2)))
                (local.set $s3 (f32x4.pmax (v128.const f32x4 0 0 0 0) (local.get $s3)))))
            (v128.store offset=0 (i32.add (local.get $z) (local.get $j)) (local.get $s0))
            (v128.store offset=16 (i32.add (local.get $z) (local.get $j)) (local.get $s1))
            (v128.store offset=32 (i32.add (local.get $z) (local.get $j)) (local.get $s2))
            (v128.store offset=48 (i32.add (local.get $z) (local.get $j)) (local.get $s3))
            (local.set $j (i32.add (local.get $j) (i32.const 64)))
            (br $j_loop)))
        (local.set $a (local.get $aend))
        (local.set $z (i32.add (local.get $z) (local.get $nb)))
        (br $rows_loop)))
  )

  ;; The 1-unit output layer: z[i] = b + sum_c a[i, c] w[c] (scalar; k inputs per row).
  (func (export "fwd1") (param $a i32) (param $w i32) (param $b i32) (param $z i32) (param $rows i32) (param $k i32)
    (local $zend i32) (local $c i32) (local $s f32) (local $kb i32)
    (local.set $kb (i32.shl (local.get $k) (i32.const 2)))
    (local.set $zend (i32.add (local.get $z) (i32.shl (local.get $rows) (i32.const 2))))
    (block $rows_done
      (loop $rows_loop
        (br_if $rows_done (i32.ge_u (local.get $z) (local.get $zend)))
        (local.set $s (f32.const 0))
        (local.set $c (i32.const 0))
        (block $k_done
          (loop $k_loop
            (br_if $k_done (i32.ge_u (local.get $c) (local.get $kb)))
            (local.set $s (f32.add (local.get $s)
              (f32.mul (f32.load (i32.add (local.get $a) (local.get $c))) (f32.load (i32.add (local.get $w) (local.get $c))))))
            (local.set $c (i32.add (local.get $c) (i32.const 4)))
            (br $k_loop)))
        (f32.store (local.get $z) (f32.add (local.get $s) (f32.load (local.get $b))))
        (local.set $a (i32.add (local.get $a) (local.get $kb)))
        (local.set $z (i32.add (local.get $z) (i32.const 4)))
        (br $rows_loop)))
  )

  ;; Backward of the 1-unit output layer: gw += a^T dz, gb += sum dz, and (act > 0) below as bwd.
  (func (export "bwd1") (param $a i32) (param $dz i32) (param $w i32) (param $gw i32) (param $gb i32) (param $below i32)
        (param $rows i32) (param $k i32) (param $act i32)
    (local $dzend i32) (local $c i32) (local $kb i32) (local $d f32) (local $v f32) (local $s f32) (local $bias f32)
    (local.set $kb (i32.shl (local.get $k) (i32.const 2)))
    (local.set $dzend (i32.add (local.get $dz) (i32.shl (local.get $rows) (i32.const 2))))
    (block $rows_done
      (loop $rows_loop
        (br_if $rows_done (i32.ge_u (local.get $dz) (local.get $dzend)))
        (local.set $d (f32.load (local.get $dz)))
        (local.set $bias (f32.add (local.get $bias) (local.get $d)))
        (local.set $c (i32.const 0))
        (block $k_done
          (loop $k_loop
            (br_if $k_done (i32.ge_u (local.get $c) (local.get $kb)))
            (local.set $v (f32.load (i32.add (local.get $a) (local.get $c))))
            (f32.store (i32.add (local.get $gw) (local.get $c))
              (f32.add (f32.load (i32.add (local.get $gw) (local.get $c))) (f32.mul (local.get $v) (local.get $d))))
            (if (local.get $act)
              (then
                (local.set $s (f32.mul (local.get $d) (f32.load (i32.add (local.get $w) (local.get $c)))))
                (if (i32.eq (local.get $act) (i32.const 2))
                  (then (if (i32.eqz (f32.gt (local.get $v) (f32.const 0))) (then (local.set $s (f32.const 0))))))
                (if (i32.eq (local.get $act) (i32.const 3))
                  (then (local.set $s (f32.mul (local.get $s) (f32.sub (f32.const 1) (f32.mul (local.get $v) (local.get $v)))))))
                (f32.store (i32.add (local.get $below) (local.get $c)) (local.get $s))))
            (local.set $c (i32.add (local.get $c) (i32.const 4)))
            (br $k_loop)))
        (local.set $a (i32.add (local.get $a) (local.get $kb)))
        (local.set $below (i32.add (local.get $below) (local.get $kb)))
        (local.set $dz (i32.add (local.get $dz) (i32.const 4)))
        (br $rows_loop)))
    (f32.store (local.get $gb) (f32.add (f32.load (local.get $gb)) (local.get $bias)))
  )

  ;; FedProx's gradient term over len4 (a multiple of 4) values: g += mu (p - global).
  (func (export "prox") (param $p i32) (param $g i32) (param $glob i32) (param $len4 i32) (param $mu f32)
    (local $i i32) (local $end i32) (local $mu4 v128)
    (local.set $mu4 (f32x4.splat (local.get $mu)))
    (local.set $end (i32.shl (local.get $len4) (i32.const 2)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (v128.store (i32.add (local.get $g) (local.get $i))
          (f32x4.add (v128.load (i32.add (local.get $g) (local.get $i)))
            (f32x4.mul (local.get $mu4)
              (f32x4.sub (v128.load (i32.add (local.get $p) (local.get $i))) (v128.load (i32.add (local.get $glob) (local.get $i)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $loop)))
  )

  ;; Plain SGD over len4 values: p -= lr g.
  (func (export "sgd") (param $p i32) (param $g i32) (param $len4 i32) (param $lr f32)
    (local $i i32) (local $end i32) (local $lr4 v128)
    (local.set $lr4 (f32x4.splat (local.get $lr)))
    (local.set $end (i32.shl (local.get $len4) (i32.const 2)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (v128.store (i32.add (local.get $p) (local.get $i))
          (f32x4.sub (v128.load (i32.add (local.get $p) (local.get $i)))
            (f32x4.mul (local.get $lr4) (v128.load (i32.add (local.get $g) (local.get $i))))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $loop)))
  )

  ;; Adam as tf.train.adam over len4 values (models/fused-mlp-optim.ts has the formulas):
  ;; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr (m / corr1) / (sqrt(v / corr2) + eps).
  (func (export "adam") (param $p i32) (param $g i32) (param $m i32) (param $v i32) (param $len4 i32)
        (param $lr f32) (param $b1 f32) (param $b2 f32) (param $c1 f32) (param $c2 f32) (param $corr1 f32) (param $corr2 f32) (param $eps f32)
    (local $i i32) (local $end i32) (local $gi v128) (local $mi v128) (local $vi v128)
    (local $B1 v128) (local $B2 v128) (local $C1 v128) (local $C2 v128) (local $K1 v128) (local $K2 v128) (local $E v128) (local $L v128)
    (local.set $B1 (f32x4.splat (local.get $b1)))
    (local.set $B2 (f32x4.splat (local.get $b2)))
    (local.set $C1 (f32x4.splat (local.get $c1)))
    (local.set $C2 (f32x4.splat (local.get $c2)))
    (local.set $K1 (f32x4.splat (local.get $corr1)))
    (local.set $K2 (f32x4.splat (local.get $corr2)))
    (local.set $E (f32x4.splat (local.get $eps)))
    (local.set $L (f32x4.splat (local.get $lr)))
    (local.set $end (i32.shl (local.get $len4) (i32.const 2)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $gi (v128.load (i32.add (local.get $g) (local.get $i))))
        (local.set $mi (f32x4.add (f32x4.mul (local.get $B1) (v128.load (i32.add (local.get $m) (local.get $i)))) (f32x4.mul (local.get $C1) (local.get $gi))))
        (local.set $vi (f32x4.add (f32x4.mul (local.get $B2) (v128.load (i32.add (local.get $v) (local.get $i))))
          (f32x4.mul (local.get $C2) (f32x4.mul (local.get $gi) (local.get $gi)))))
        (v128.store (i32.add (local.get $m) (local.get $i)) (local.get $mi))
        (v128.store (i32.add (local.get $v) (local.get $i)) (local.get $vi))
        (v128.store (i32.add (local.get $p) (local.get $i))
          (f32x4.sub (v128.load (i32.add (local.get $p) (local.get $i)))
            (f32x4.div
              (f32x4.mul (local.get $L) (f32x4.div (local.get $mi) (local.get $K1)))
              (f32x4.add (f32x4.sqrt (f32x4.div (local.get $vi) (local.get $K2))) (local.get $E)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $loop)))
  )

)

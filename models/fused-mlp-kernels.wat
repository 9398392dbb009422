;; WASM SIMD kernels of the fused dense trainer (models/fused-mlp.ts), for layers whose width n
;; is a multiple of 4: f32x4 lanes over the output units. Same loop order and zero skipping as
;; the JavaScript kernels (i-k-j; a layer's backward pass in one sweep). Pointers are byte
;; offsets into the imported memory. Rebuild the embedded binary (models/fused-mlp-wasm.ts) with
;;   node bin/run-ts.js models/fused-mlp-wasm-build.ts
(module
  (import "env" "memory" (memory 1))

  ;; z[i, :] = b + sum_c a[i, c] w[c, :] for each of `rows` rows (a: rows x k, w: k x n).
  (func (export "fwd") (param $a i32) (param $w i32) (param $b i32) (param $z i32) (param $rows i32) (param $k i32) (param $n i32)
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
            (local.set $v (f32.load (local.get $a)))
            (if (f32.ne (local.get $v) (f32.const 0))
              (then
                (local.set $vv (f32x4.splat (local.get $v)))
                (local.set $j (i32.const 0))
                (block $j_done
                  (loop $j_loop
                    (br_if $j_done (i32.ge_u (local.get $j) (local.get $nb)))
                    (v128.store (i32.add (local.get $z) (local.get $j))
                      (f32x4.add
                        (v128.load (i32.add (local.get $z) (local.get $j)))
                        (f32x4.mul (local.get $vv) (v128.load (i32.add (local.get $wp) (local.get $j))))))
                    (local.set $j (i32.add (local.get $j) (i32.const 16)))
                    (br $j_loop)))))
            (local.set $a (i32.add (local.get $a) (i32.const 4)))
            (local.set $wp (i32.add (local.get $wp) (local.get $nb)))
            (br $k_loop)))
        (local.set $z (i32.add (local.get $z) (local.get $nb)))
        (br $rows_loop)))
  )

  ;; Backward of one layer: gw += a^T dz, gb += column sums of dz, and (act > 0)
  ;; below[i, c] = f'(a[i, c]) * sum_j dz[i, j] w[c, j], where a is the activated output of the
  ;; layer below. act: 0 = no layer below (layer 0), 1 = linear, 2 = ReLU, 3 = tanh.
  (func (export "bwd") (param $a i32) (param $dz i32) (param $w i32) (param $gw i32) (param $gb i32) (param $below i32)
        (param $rows i32) (param $k i32) (param $n i32) (param $act i32)
    (local $nb i32) (local $kb i32) (local $aend i32) (local $dzend i32) (local $wp i32) (local $gwp i32) (local $j i32)
    (local $v f32) (local $vv v128) (local $d v128) (local $s4 v128) (local $s f32)
    (local.set $nb (i32.shl (local.get $n) (i32.const 2)))
    (local.set $kb (i32.shl (local.get $k) (i32.const 2)))
    (local.set $dzend (i32.add (local.get $dz) (i32.mul (local.get $rows) (local.get $nb))))
    (block $rows_done
      (loop $rows_loop
        (br_if $rows_done (i32.ge_u (local.get $dz) (local.get $dzend)))
        ;; bias gradient
        (local.set $j (i32.const 0))
        (block $bias_done
          (loop $bias_loop
            (br_if $bias_done (i32.ge_u (local.get $j) (local.get $nb)))
            (v128.store (i32.add (local.get $gb) (local.get $j))
              (f32x4.add (v128.load (i32.add (local.get $gb) (local.get $j))) (v128.load (i32.add (local.get $dz) (local.get $j)))))
            (local.set $j (i32.add (local.get $j) (i32.const 16)))
            (br $bias_loop)))
        (local.set $aend (i32.add (local.get $a) (local.get $kb)))
        (local.set $wp (local.get $w))
        (local.set $gwp (local.get $gw))
        (block $k_done
          (loop $k_loop
            (br_if $k_done (i32.ge_u (local.get $a) (local.get $aend)))
            (local.set $v (f32.load (local.get $a)))
            (if (i32.eqz (local.get $act))
              (then
                ;; layer 0: kernel gradient only, nothing to do for a zero input
                (if (f32.ne (local.get $v) (f32.const 0))
                  (then
                    (local.set $vv (f32x4.splat (local.get $v)))
                    (local.set $j (i32.const 0))
                    (block $j0_done
                      (loop $j0_loop
                        (br_if $j0_done (i32.ge_u (local.get $j) (local.get $nb)))
                        (v128.store (i32.add (local.get $gwp) (local.get $j))
                          (f32x4.add
                            (v128.load (i32.add (local.get $gwp) (local.get $j)))
                            (f32x4.mul (local.get $vv) (v128.load (i32.add (local.get $dz) (local.get $j))))))
                        (local.set $j (i32.add (local.get $j) (i32.const 16)))
                        (br $j0_loop))))))
              (else
                (if (i32.and (i32.eq (local.get $act) (i32.const 2)) (i32.eqz (f32.gt (local.get $v) (f32.const 0))))
                  (then
                    ;; ReLU unit off: no kernel gradient, no gradient below
                    (f32.store (local.get $below) (f32.const 0)))
                  (else
                    (local.set $vv (f32x4.splat (local.get $v)))
                    (local.set $s4 (v128.const f32x4 0 0 0 0))
                    (local.set $j (i32.const 0))
                    (block $j_done
                      (loop $j_loop
                        (br_if $j_done (i32.ge_u (local.get $j) (local.get $nb)))
                        (local.set $d (v128.load (i32.add (local.get $dz) (local.get $j))))
                        (local.set $s4 (f32x4.add (local.get $s4) (f32x4.mul (local.get $d) (v128.load (i32.add (local.get $wp) (local.get $j))))))
                        (v128.store (i32.add (local.get $gwp) (local.get $j))
                          (f32x4.add (v128.load (i32.add (local.get $gwp) (local.get $j))) (f32x4.mul (local.get $vv) (local.get $d))))
                        (local.set $j (i32.add (local.get $j) (i32.const 16)))
                        (br $j_loop)))
                    (local.set $s
                      (f32.add
                        (f32.add (f32x4.extract_lane 0 (local.get $s4)) (f32x4.extract_lane 1 (local.get $s4)))
                        (f32.add (f32x4.extract_lane 2 (local.get $s4)) (f32x4.extract_lane 3 (local.get $s4)))))
                    (if (i32.eq (local.get $act) (i32.const 3))
                      (then (local.set $s (f32.mul (local.get $s) (f32.sub (f32.const 1) (f32.mul (local.get $v) (local.get $v)))))))
                    (f32.store (local.get $below) (local.get $s))))
                (local.set $below (i32.add (local.get $below) (i32.const 4)))))
            (local.set $a (i32.add (local.get $a) (i32.const 4)))
            (local.set $wp (i32.add (local.get $wp) (local.get $nb)))
            (local.set $gwp (i32.add (local.get $gwp) (local.get $nb)))
            (br $k_loop)))
        (local.set $dz (i32.add (local.get $dz) (local.get $nb)))
        (br $rows_loop)))
  )
)

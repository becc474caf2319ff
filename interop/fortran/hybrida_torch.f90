! Fortran binding of the hybrida shim (interop/shim/hybrida_shim.h) through iso_c_binding.
!
! A part exported by `hybrida export` is loaded once (hyb_load), called on states (hyb_forward,
! hyb_jvp, hyb_vjp) and released (hyb_free). Each returns the shim's status (HYB_OK = 0) and, on
! error, a one-line message. Arrays: real(c_double) x(n, batch) in Fortran order is exactly the
! shim's row-major (batch, n), so no copy or transpose is made.
module hybrida_torch
  use, intrinsic :: iso_c_binding, only: c_ptr, c_null_ptr, c_int, c_int64_t, c_double, c_char, &
                                         c_null_char, c_associated
  implicit none
  private
  public :: hyb_part, hyb_load, hyb_forward, hyb_jvp, hyb_vjp, hyb_manifest_string, hyb_free, &
            hyb_set_threads, HYB_OK, HYB_MSG_LEN

  integer, parameter :: HYB_OK = 0
  integer, parameter :: HYB_MSG_LEN = 1024

  !> A loaded exported part (opaque handle of the shim).
  type :: hyb_part
    type(c_ptr) :: ptr = c_null_ptr
  end type hyb_part

  interface
    integer(c_int) function c_load(path, kind, n, part, msg, msg_len) bind(c, name="hyb_part_load")
      import :: c_int, c_int64_t, c_char, c_ptr
      character(kind=c_char), intent(in) :: path(*), kind(*)
      integer(c_int64_t), value :: n
      type(c_ptr), intent(out) :: part
      character(kind=c_char), intent(out) :: msg(*)
      integer(c_int64_t), value :: msg_len
    end function c_load

    integer(c_int) function c_forward(part, x, batch, n, y, msg, msg_len) bind(c, name="hyb_part_forward")
      import :: c_int, c_int64_t, c_char, c_ptr, c_double
      type(c_ptr), value :: part
      real(c_double), intent(in) :: x(*)
      integer(c_int64_t), value :: batch, n
      real(c_double), intent(out) :: y(*)
      character(kind=c_char), intent(out) :: msg(*)
      integer(c_int64_t), value :: msg_len
    end function c_forward

    integer(c_int) function c_jvp(part, x, dx, n, y, mdx, msg, msg_len) bind(c, name="hyb_part_jvp")
      import :: c_int, c_int64_t, c_char, c_ptr, c_double
      type(c_ptr), value :: part
      real(c_double), intent(in) :: x(*), dx(*)
      integer(c_int64_t), value :: n
      real(c_double), intent(out) :: y(*), mdx(*)
      character(kind=c_char), intent(out) :: msg(*)
      integer(c_int64_t), value :: msg_len
    end function c_jvp

    integer(c_int) function c_vjp(part, x, dy, n, y, mtdy, msg, msg_len) bind(c, name="hyb_part_vjp")
      import :: c_int, c_int64_t, c_char, c_ptr, c_double
      type(c_ptr), value :: part
      real(c_double), intent(in) :: x(*), dy(*)
      integer(c_int64_t), value :: n
      real(c_double), intent(out) :: y(*), mtdy(*)
      character(kind=c_char), intent(out) :: msg(*)
      integer(c_int64_t), value :: msg_len
    end function c_vjp

    integer(c_int) function c_manifest_string(part, key, out, out_len) bind(c, name="hyb_part_manifest_string")
      import :: c_int, c_int64_t, c_char, c_ptr
      type(c_ptr), value :: part
      character(kind=c_char), intent(in) :: key(*)
      character(kind=c_char), intent(out) :: out(*)
      integer(c_int64_t), value :: out_len
    end function c_manifest_string

    subroutine c_set_threads(threads) bind(c, name="hyb_set_num_threads")
      import :: c_int
      integer(c_int), value :: threads
    end subroutine c_set_threads

    subroutine c_free(part) bind(c, name="hyb_part_free")
      import :: c_ptr
      type(c_ptr), value :: part
    end subroutine c_free
  end interface

contains

  !> The Fortran string of a NUL-terminated C buffer.
  function from_c(buf) result(s)
    character(kind=c_char), intent(in) :: buf(:)
    character(len=:), allocatable :: s
    integer :: i, m
    m = size(buf)
    do i = 1, size(buf)
      if (buf(i) == c_null_char) then
        m = i - 1
        exit
      end if
    end do
    allocate(character(len=m) :: s)
    do i = 1, m
      s(i:i) = buf(i)
    end do
  end function from_c

  !> Load PATH, check it against PATH.json (file, sha256, float64, KIND) and probe it with n states.
  integer function hyb_load(part, path, kind, n, msg) result(status)
    type(hyb_part), intent(out) :: part
    character(len=*), intent(in) :: path, kind
    integer, intent(in) :: n
    character(len=:), allocatable, intent(out) :: msg
    character(kind=c_char) :: buf(HYB_MSG_LEN)
    status = c_load(trim(path) // c_null_char, trim(kind) // c_null_char, int(n, c_int64_t), part%ptr, &
                    buf, int(HYB_MSG_LEN, c_int64_t))
    msg = from_c(buf)
  end function hyb_load

  !> y(:, b) = part(x(:, b)) for each column b of x(n, batch).
  integer function hyb_forward(part, x, y, msg) result(status)
    type(hyb_part), intent(in) :: part
    real(c_double), intent(in) :: x(:, :)
    real(c_double), intent(out) :: y(:, :)
    character(len=:), allocatable, intent(out) :: msg
    character(kind=c_char) :: buf(HYB_MSG_LEN)
    if (size(y, 2) /= size(x, 2)) then
      status = 4
      msg = "hyb_forward: y must have as many columns (batch members) as x"
      return
    end if
    status = c_forward(part%ptr, x, int(size(x, 2), c_int64_t), int(size(x, 1), c_int64_t), y, buf, &
                       int(HYB_MSG_LEN, c_int64_t))
    msg = from_c(buf)
  end function hyb_forward

  !> Tangent linear at x: y = part(x), mdx = M dx (one state of n values).
  integer function hyb_jvp(part, x, dx, y, mdx, msg) result(status)
    type(hyb_part), intent(in) :: part
    real(c_double), intent(in) :: x(:), dx(:)
    real(c_double), intent(out) :: y(:), mdx(:)
    character(len=:), allocatable, intent(out) :: msg
    character(kind=c_char) :: buf(HYB_MSG_LEN)
    status = c_jvp(part%ptr, x, dx, int(size(x), c_int64_t), y, mdx, buf, int(HYB_MSG_LEN, c_int64_t))
    msg = from_c(buf)
  end function hyb_jvp

  !> Adjoint at x: y = part(x), mtdy = M^T dy.
  integer function hyb_vjp(part, x, dy, y, mtdy, msg) result(status)
    type(hyb_part), intent(in) :: part
    real(c_double), intent(in) :: x(:), dy(:)
    real(c_double), intent(out) :: y(:), mtdy(:)
    character(len=:), allocatable, intent(out) :: msg
    character(kind=c_char) :: buf(HYB_MSG_LEN)
    status = c_vjp(part%ptr, x, dy, int(size(x), c_int64_t), y, mtdy, buf, int(HYB_MSG_LEN, c_int64_t))
    msg = from_c(buf)
  end function hyb_vjp

  !> A top-level string of the part's manifest (e.g. "correction_kind"); status /= HYB_OK when absent.
  integer function hyb_manifest_string(part, key, value) result(status)
    type(hyb_part), intent(in) :: part
    character(len=*), intent(in) :: key
    character(len=:), allocatable, intent(out) :: value
    character(kind=c_char) :: buf(HYB_MSG_LEN)
    status = c_manifest_string(part%ptr, trim(key) // c_null_char, buf, int(HYB_MSG_LEN, c_int64_t))
    value = from_c(buf)
  end function hyb_manifest_string

  !> Limit libtorch's intra-op threads.
  subroutine hyb_set_threads(threads)
    integer, intent(in) :: threads
    call c_set_threads(int(threads, c_int))
  end subroutine hyb_set_threads

  !> Release the part (safe on a part never loaded).
  subroutine hyb_free(part)
    type(hyb_part), intent(inout) :: part
    if (c_associated(part%ptr)) call c_free(part%ptr)
    part%ptr = c_null_ptr
  end subroutine hyb_free

end module hybrida_torch

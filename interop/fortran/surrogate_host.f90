! Fortran host: a hybrida-exported surrogate step M called through the C shim (module hybrida_torch):
! its free run against Python's, and its tangent linear and adjoint (libtorch autograd behind the shim)
! with the adjoint dot-product test.
!
! Usage: surrogate_host_f SURROGATE.torchscript.pt SURROGATE_REFERENCE.bin [N_PASSED]
!   SURROGATE_REFERENCE.bin: written by interop/make_reference.py. Exit 0 when max |host - python| <= 1e-10
!   over the run and the dot-product test holds to 1e-12 (relative), 1 when not, 2 on bad input.
program surrogate_host_f
  use, intrinsic :: iso_c_binding, only: c_double, c_int64_t, c_int
  use, intrinsic :: iso_fortran_env, only: error_unit, output_unit
  use hybrida_torch
  implicit none

  interface
    subroutine c_exit(status) bind(c, name="exit")
      import :: c_int
      integer(c_int), value :: status
    end subroutine c_exit
  end interface

  integer, parameter :: N = 40
  type(hyb_part) :: surr
  character(len=4096) :: model_path, ref_path, arg
  character(len=:), allocatable :: msg
  integer(c_int64_t) :: head(3)
  real(c_double), allocatable :: v(:, :), traj(:, :), x(:, :), y(:, :)
  real(c_double) :: diff, lhs, rhs, rel, mdx(N), mtdy(N), y1(N)
  integer :: u, ios, k, n_passed, status

  if (command_argument_count() < 2 .or. command_argument_count() > 3) &
    call fail("usage: surrogate_host_f SURROGATE.torchscript.pt SURROGATE_REFERENCE.bin [N_PASSED]")
  call get_command_argument(1, model_path)
  call get_command_argument(2, ref_path)
  n_passed = N
  if (command_argument_count() == 3) then
    call get_command_argument(3, arg)
    read (arg, *, iostat=ios) n_passed
    if (ios /= 0) call fail("N_PASSED must be an integer, got " // trim(arg))
  end if

  open (newunit=u, file=trim(ref_path), access="stream", form="unformatted", status="old", action="read", iostat=ios)
  if (ios /= 0) call fail(trim(ref_path) // ": no such file (or unreadable)")
  read (u, iostat=ios) head
  if (ios /= 0 .or. head(1) /= 960418_c_int64_t .or. head(2) /= N .or. head(3) < 1 .or. head(3) > 1000000) &
    call fail(trim(ref_path) // ": not a surrogate reference (n=40) of make_reference.py")
  allocate (v(N, 5), traj(N, 0:head(3)))
  read (u, iostat=ios) v, traj  ! x, dx, dy, M dx, M^T dy; then the free run
  if (ios /= 0) call fail(trim(ref_path) // ": truncated surrogate reference")
  close (u)

  call hyb_set_threads(1)
  status = hyb_load(surr, model_path, "surrogate", n_passed, msg)
  if (status /= HYB_OK) call fail(msg)

  allocate (x(N, 1), y(N, 1))
  x(:, 1) = traj(:, 0)
  diff = 0.0_c_double
  do k = 1, int(head(3))
    status = hyb_forward(surr, x, y, msg)
    if (status /= HYB_OK) call fail(msg)
    x = y
    diff = max(diff, maxval(abs(x(:, 1) - traj(:, k))))
    if (.not. (abs(x(1, 1)) <= huge(diff))) diff = huge(diff)
  end do

  status = hyb_jvp(surr, v(:, 1), v(:, 2), y1, mdx, msg)
  if (status /= HYB_OK) call fail(msg)
  status = hyb_vjp(surr, v(:, 1), v(:, 3), y1, mtdy, msg)
  if (status /= HYB_OK) call fail(msg)
  lhs = dot_product(mdx, v(:, 3))
  rhs = dot_product(v(:, 2), mtdy)
  rel = abs(lhs - rhs) / max(abs(lhs), abs(rhs))
  call hyb_free(surr)
  write (output_unit, "(a, i0, a, es9.2, a)") "Fortran host: surrogate, ", head(3), &
    " steps: max |host - python| = ", diff, " (bar 1e-10)"
  write (output_unit, "(a, es24.17, a, es24.17, a, es9.2, a, es9.2, a)") &
    "Fortran host: surrogate adjoint test via the shim <M dx, dy> =", lhs, ", <dx, M^T dy> =", rhs, &
    ", relative difference", rel, " (bar 1e-12); max |host - python| of M dx and M^T dy", &
    max(maxval(abs(mdx - v(:, 4))), maxval(abs(mtdy - v(:, 5)))), " (bar 1e-12)"
  if (diff > 1.0e-10_c_double .or. rel > 1.0e-12_c_double .or. maxval(abs(mdx - v(:, 4))) > 1.0e-12_c_double &
      .or. maxval(abs(mtdy - v(:, 5))) > 1.0e-12_c_double) call c_exit(1_c_int)

contains

  !> Print "error: MESSAGE" on one line and exit 2.
  subroutine fail(message)
    character(len=*), intent(in) :: message
    write (error_unit, "(a)") "error: " // trim(message)
    call c_exit(2_c_int)
  end subroutine fail

end program surrogate_host_f

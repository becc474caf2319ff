! Fortran host: Lorenz-96 (n=40, F=8, dt=0.05, RK4) written here, plus a hybrida-exported learned
! correction called every step through the C shim (module hybrida_torch); prints max |host - python|.
!
! Usage: l96_host_f CORRECTION.torchscript.pt REFERENCE.bin [N_PASSED]
!   REFERENCE.bin: written by interop/make_reference.py; N_PASSED: the state size handed to the part
!   (default 40; another value tests the refusal). Exit 0 when max |host - python| <= 1e-10, 1 when
!   above, 2 on bad input (one line on stderr).
!
! The hybrid model is hybrida.models.corrected.CorrectedModel, kind read from the manifest:
!   resolvent: x_{k+1} = M(x_k) + c(x_k);  tendency: RK4 of dx/dt = f(x) + c(x).
! Bit-for-bit agreement with Python needs torch's floating-point operations in torch's order: the
! tendency is mad(x_{i+1} - x_{i-2}, x_{i-1}, F - x_i) and the resolvent RK4's scaled adds are mads,
! mad = one fma where torch runs vectorised kernels (AVX2, AVX-512), a*b + c with its scalar ones (the
! reference file says which); compiled with -ffp-contract=off so that no other product is fused.
module l96
  use, intrinsic :: iso_c_binding, only: c_double
  implicit none
  private
  public :: N, F, DT, fused, tendency, physics_step

  integer, parameter :: N = 40
  real(c_double), parameter :: F = 8.0_c_double, DT = 0.05_c_double
  !> a*b + c as torch computes it: one rounding (fma) in its vectorised kernels, two in its scalar ones
  logical :: fused = .true.

  interface
    !> a*b + c with one rounding (C99 fma).
    pure real(c_double) function fma(a, b, c) bind(c, name="fma")
      import :: c_double
      real(c_double), value :: a, b, c
    end function fma
  end interface

contains

  !> a*b + c, fused or not as torch's L96 step (see the reference file's flag).
  pure real(c_double) function mad(a, b, c)
    real(c_double), intent(in) :: a, b, c
    if (fused) then
      mad = fma(a, b, c)
    else
      mad = a * b + c
    end if
  end function mad

  !> Lorenz (1996): dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F, periodic.
  pure function tendency(x) result(t)
    real(c_double), intent(in) :: x(N)
    real(c_double) :: t(N)
    integer :: i
    do i = 1, N
      t(i) = mad(x(modulo(i, N) + 1) - x(modulo(i - 3, N) + 1), x(modulo(i - 2, N) + 1), F - x(i))
    end do
  end function tendency

  !> One RK4 step as hybrida.models.lorenz96.l96_rk4_step computes it.
  pure function physics_step(x) result(y)
    real(c_double), intent(in) :: x(N)
    real(c_double) :: y(N), s(N), k1(N), k2(N), k3(N), k4(N), h
    integer :: i
    h = 0.5_c_double * DT
    k1 = tendency(x)
    do i = 1, N
      s(i) = mad(k1(i), h, x(i))
    end do
    k2 = tendency(s)
    do i = 1, N
      s(i) = mad(k2(i), h, x(i))
    end do
    k3 = tendency(s)
    do i = 1, N
      s(i) = mad(k3(i), DT, x(i))
    end do
    k4 = tendency(s)
    do i = 1, N
      y(i) = mad(mad(k3(i), 2.0_c_double, mad(k2(i), 2.0_c_double, k1(i))) + k4(i), DT / 6.0_c_double, x(i))
    end do
  end function physics_step

end module l96

program l96_host_f
  use, intrinsic :: iso_c_binding, only: c_double, c_int64_t, c_int
  use, intrinsic :: iso_fortran_env, only: error_unit, output_unit
  use hybrida_torch
  use l96
  implicit none

  interface
    subroutine c_exit(status) bind(c, name="exit")
      import :: c_int
      integer(c_int), value :: status
    end subroutine c_exit
  end interface

  type(hyb_part) :: corr
  character(len=4096) :: model_path, ref_path, arg
  character(len=:), allocatable :: msg, kind
  integer(c_int64_t) :: head(5)
  real(c_double) :: fdt(2), diff
  real(c_double), allocatable :: traj(:, :), x(:)
  integer :: u, ios, k, n_passed, status
  character(len=*), parameter :: names(0:1) = ["resolvent", "tendency "]

  if (command_argument_count() < 2 .or. command_argument_count() > 3) &
    call fail("usage: l96_host_f CORRECTION.torchscript.pt REFERENCE.bin [N_PASSED]")
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
  read (u, iostat=ios) head, fdt
  if (ios /= 0 .or. head(1) /= 960417_c_int64_t .or. head(3) < 1 .or. head(3) > 10000000 .or. head(4) < 0 &
      .or. head(4) > 1 .or. head(5) < 0 .or. head(5) > 1) &
    call fail(trim(ref_path) // ": not a trajectory reference of make_reference.py")
  fused = head(5) == 1
  if (head(2) /= N .or. fdt(1) /= F .or. fdt(2) /= DT) &
    call fail(trim(ref_path) // ": reference of another L96; this host runs n=40, F=8, dt=0.05")
  allocate (traj(N, 0:head(3)), x(N))
  read (u, iostat=ios) traj
  if (ios /= 0) call fail(trim(ref_path) // ": truncated reference file")
  close (u)

  call hyb_set_threads(1)
  status = hyb_load(corr, model_path, "correction", n_passed, msg)
  if (status /= HYB_OK) call fail(msg)
  status = hyb_manifest_string(corr, "correction_kind", kind)
  if (status /= HYB_OK) kind = "?"
  if (kind /= trim(names(head(4)))) &
    call fail(trim(model_path) // ": a " // kind // " correction, but the reference is a " // trim(names(head(4))) // " run")

  x = traj(:, 0)
  diff = 0.0_c_double
  do k = 1, int(head(3))
    x = hybrid_step(x)
    diff = max(diff, maxval(abs(x - traj(:, k))))
    if (.not. (abs(x(1)) <= huge(x(1)))) diff = huge(diff)
  end do
  call hyb_free(corr)
  write (output_unit, "(a, i0, a, es10.3, a)") "Fortran host: L96 n=40 + " // kind // " correction, ", head(3), &
    " steps (" // trim(merge("fused  ", "unfused", fused)) // " multiply-adds): max |host - python| = ", diff, &
    " (bar 1e-10)"
  if (diff > 1.0e-10_c_double) call c_exit(1_c_int)

contains

  !> The learned correction c(x) of one state, through the shim (a (n, 1) batch of one).
  function correction(v) result(c)
    real(c_double), intent(in) :: v(N)
    real(c_double) :: c(N), vin(n_passed, 1), cout(N, 1)
    vin = 0.0_c_double
    vin(1:min(N, n_passed), 1) = v(1:min(N, n_passed))
    status = hyb_forward(corr, vin, cout, msg)
    if (status /= HYB_OK) call fail(msg)
    c = cout(:, 1)
  end function correction

  !> One step of CorrectedModel: resolvent M(x) + c(x), or RK4 of f + c (integrators.rk4_step).
  function hybrid_step(v) result(y)
    real(c_double), intent(in) :: v(N)
    real(c_double) :: y(N), k1(N), k2(N), k3(N), k4(N), h
    if (kind == "resolvent") then
      y = physics_step(v) + correction(v)
      return
    end if
    h = 0.5_c_double * DT
    k1 = tendency(v) + correction(v)
    k2 = tendency(v + h * k1) + correction(v + h * k1)
    k3 = tendency(v + h * k2) + correction(v + h * k2)
    k4 = tendency(v + DT * k3) + correction(v + DT * k3)
    y = v + (DT / 6.0_c_double) * (((k1 + 2.0_c_double * k2) + 2.0_c_double * k3) + k4)
  end function hybrid_step

  !> Print "error: MESSAGE" on one line and exit 2.
  subroutine fail(message)
    character(len=*), intent(in) :: message
    write (error_unit, "(a)") "error: " // trim(message)
    call c_exit(2_c_int)
  end subroutine fail

end program l96_host_f

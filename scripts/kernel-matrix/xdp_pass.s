# XDP_PASS and nothing else: attached natively to the veth ends that receive
# redirected frames, which kernels before 5.13 require (GRO is not enough).
	.section	xdp,"ax",@progbits
	.globl	xdp_pass
	.type	xdp_pass,@function
xdp_pass:
	r0 = 2
	exit
	.size	xdp_pass, .-xdp_pass

	.section	license,"aw",@progbits
	.globl	_license
_license:
	.asciz	"GPL"

// Behavioural model of the Lattice ECP5 TRELLIS_FF (one slice flip-flop, as nextpnr-ecp5 and
// Yosys name it), for simulation only: rising-edge clock (CLKMUX "CLK"), clock enable always on
// (CEMUX "1") or CE (CEMUX "CE"), and LSR a synchronous set or reset (SRMODE "LSR_OVER_CE",
// REGSET) taking precedence over the enable. Powers up as REGSET says (the GSR state). Written
// from the ECP5 FPGA Libraries Reference Guide and prjtrellis' cell description; the vendor's
// own model is not redistributable.
`default_nettype none
module TRELLIS_FF(CLK, LSR, CE, DI, M, Q);
    parameter GSR = "ENABLED";
    parameter CEMUX = "1";
    parameter CLKMUX = "CLK";
    parameter LSRMUX = "LSR";
    parameter SRMODE = "LSR_OVER_CE";
    parameter REGSET = "RESET";
    parameter LSRMODE = "LSR";

    input wire CLK, LSR, CE, DI, M;
    output reg Q;

    initial Q = REGSET == "SET";
    always @(posedge CLK)
        if (LSR)
            Q <= REGSET == "SET";
        else if (CEMUX == "1" || CE)
            Q <= DI;
endmodule
`default_nettype wire

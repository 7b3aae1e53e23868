// Behavioural model of the Lattice ECP5 MULT18X18D, for simulation only: the subset Lutra
// instantiates (hw/common/mul.py). Multiplier mode, A and B from the ports (SOURCEA/B = 0),
// operand, pipeline and output registers each either bypassed ("NONE") or clocked by CLK0 with
// CE0 and, in SYNC reset mode, RST0. SIGNEDA/SIGNEDB select two's complement operands. The
// cascade ports (SRIA/SRIB, SROA/SROB, ROA/ROB/ROC) and the other clocks are not modelled.
// Written from the ECP5 sysDSP user guide (TN1267); the vendor's own model is not redistributable.
`default_nettype none
module MULT18X18D(A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0, B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0, C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0, SIGNEDA, SIGNEDB, SOURCEA, SOURCEB, CLK3, CLK2, CLK1, CLK0, CE3, CE2, CE1, CE0, RST3, RST2, RST1, RST0, SRIA17, SRIA16, SRIA15, SRIA14, SRIA13, SRIA12, SRIA11, SRIA10, SRIA9, SRIA8, SRIA7, SRIA6, SRIA5, SRIA4, SRIA3, SRIA2, SRIA1, SRIA0, SRIB17, SRIB16, SRIB15, SRIB14, SRIB13, SRIB12, SRIB11, SRIB10, SRIB9, SRIB8, SRIB7, SRIB6, SRIB5, SRIB4, SRIB3, SRIB2, SRIB1, SRIB0, P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter GSR = "ENABLED";
    parameter RESETMODE = "SYNC";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter HIGHSPEED_CLK = "NONE";

    input wire A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0;
    input wire B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0;
    input wire C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0;
    input wire SIGNEDA, SIGNEDB, SOURCEA, SOURCEB;
    input wire CLK3, CLK2, CLK1, CLK0, CE3, CE2, CE1, CE0, RST3, RST2, RST1, RST0;
    input wire SRIA17, SRIA16, SRIA15, SRIA14, SRIA13, SRIA12, SRIA11, SRIA10, SRIA9, SRIA8, SRIA7, SRIA6, SRIA5, SRIA4, SRIA3, SRIA2, SRIA1, SRIA0;
    input wire SRIB17, SRIB16, SRIB15, SRIB14, SRIB13, SRIB12, SRIB11, SRIB10, SRIB9, SRIB8, SRIB7, SRIB6, SRIB5, SRIB4, SRIB3, SRIB2, SRIB1, SRIB0;
    output wire P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0;

    wire [17:0] a_in = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b_in = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    reg [17:0] a_reg = 18'd0, b_reg = 18'd0;
    reg signa_reg = 1'b0, signb_reg = 1'b0;
    reg [35:0] pipe_reg = 36'd0, out_reg = 36'd0;

    always @(posedge CLK0) if (RST0) begin
        a_reg <= 18'd0; b_reg <= 18'd0; signa_reg <= 1'b0; signb_reg <= 1'b0;
    end else if (CE0) begin
        a_reg <= a_in; b_reg <= b_in; signa_reg <= SIGNEDA; signb_reg <= SIGNEDB;
    end

    wire [17:0] a = REG_INPUTA_CLK == "NONE" ? a_in : a_reg;
    wire [17:0] b = REG_INPUTB_CLK == "NONE" ? b_in : b_reg;
    wire signa = REG_INPUTA_CLK == "NONE" ? SIGNEDA : signa_reg;
    wire signb = REG_INPUTB_CLK == "NONE" ? SIGNEDB : signb_reg;
    wire [35:0] a_ext = {{18{signa & a[17]}}, a};
    wire [35:0] b_ext = {{18{signb & b[17]}}, b};
    wire [35:0] product = a_ext * b_ext;

    always @(posedge CLK0) if (RST0) pipe_reg <= 36'd0; else if (CE0) pipe_reg <= product;
    wire [35:0] piped = REG_PIPELINE_CLK == "NONE" ? product : pipe_reg;
    always @(posedge CLK0) if (RST0) out_reg <= 36'd0; else if (CE0) out_reg <= piped;
    wire [35:0] p = REG_OUTPUT_CLK == "NONE" ? piped : out_reg;
    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = p;
endmodule
`default_nettype wire
